/*
 * A stand-in for libedgetpu.so.1 in tests: a TFLite external-delegate plugin
 * that claims no nodes, so the model runs on the CPU kernels while loading,
 * option passing and fallback go through the runtime's real load_delegate.
 *
 * Options it understands (all others are only recorded):
 *   record=PATH   append "key=value\n" for every option, then "created\n";
 *                 "destroyed\n" is appended when the delegate is destroyed.
 *   fail=1        return NULL from create, after reporting an error.
 *   abort_on_prepare=1     abort() the process when the runtime prepares the
 *                 delegate (while the interpreter is built), as libedgetpu
 *                 does on a USB error: a Coral whose worker keeps dying.
 *   abort_if_exists=PATH   the same, but only while PATH exists, so a test can
 *                 start on the "Coral" and pull it out later.
 * The environment variable STUB_DELEGATE_FAIL=1 also makes create fail, for
 * callers that cannot add options (edged passes only "device" to the Edge TPU);
 * STUB_DELEGATE_FAIL_IF_EXISTS=PATH makes it fail only while PATH exists (a
 * Coral that is plugged in later).
 * STUB_DELEGATE_RECORD=PATH is the default for record=.
 * STUB_DELEGATE_DEVICE=PATH: the "device" exists only while PATH exists
 * (a fake sysfs entry of a USB Accelerator): create fails while it is gone,
 * as libedgetpu does with no Edge TPU plugged in.
 * STUB_DELEGATE_ABORT_IF_EXISTS=PATH is the default for abort_if_exists=.
 * STUB_DELEGATE_MAX_INSTANCES=N: create fails while N of its delegates live in the
 *                 process (a driver that opens the device for so many interpreters).
 *   invoke_us=N   (or STUB_DELEGATE_INVOKE_US=N) claim the whole graph and spend N
 *                 microseconds per invoke asleep, off the CPU, leaving the outputs
 *                 as they are: an accelerator's timing without one, for edged
 *                 bench's accelerator row (a Coral runs MobileNetV2 in ~2.6 ms); one
 *                 invoke at a time in the process, as one device runs them.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Layout of TfLiteDelegate from tensorflow/lite/core/c/common.h. Fields are
 * only ever appended there, and the runtime reads no further than these. */
typedef int TfLiteStatus; /* kTfLiteOk == 0 */
struct TfLiteContext;
typedef struct TfLiteDelegate {
    void *data_;
    TfLiteStatus (*Prepare)(struct TfLiteContext *context, struct TfLiteDelegate *delegate);
    TfLiteStatus (*CopyFromBufferHandle)(void *, struct TfLiteDelegate *, int, void *);
    TfLiteStatus (*CopyToBufferHandle)(void *, struct TfLiteDelegate *, int, void *);
    void (*FreeBufferHandle)(void *, struct TfLiteDelegate *, int *);
    int64_t flags;
    void *opaque_delegate_builder; /* must stay NULL: non-NULL takes precedence over Prepare */
} TfLiteDelegate;

/* The parts of TfLiteContext and TfLiteRegistration (same header) that claiming the
 * graph needs; the registration is passed by value, so it is padded past the
 * runtime's own size (the callee reads only its prefix). */
typedef struct { int size; int data[]; } TfLiteIntArray;
typedef struct TfLiteRegistration {
    void *(*init)(struct TfLiteContext *, const char *, size_t);
    void (*free)(struct TfLiteContext *, void *);
    TfLiteStatus (*prepare)(struct TfLiteContext *, void *node);
    TfLiteStatus (*invoke)(struct TfLiteContext *, void *node);
    void *profiling_string;
    int32_t builtin_code;
    const char *custom_name;
    int version;
    void *registration_external;
    void *async_kernel;
    uint64_t inplace_operator;
    char padding[256];
} TfLiteRegistration;
typedef struct TfLiteContext {
    size_t tensors_size;
    TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext *, TfLiteIntArray **);
    void *tensors;
    void *impl_;
    void *ResizeTensor;
    void *ReportError;
    void *AddTensors;
    void *GetNodeAndRegistration;
    TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext *,
                                                          struct TfLiteRegistration,
                                                          const TfLiteIntArray *,
                                                          TfLiteDelegate *);
} TfLiteContext;

typedef struct {
    char record[4096];
    int abort_on_prepare;
    char abort_if_exists[4096];
    long invoke_us;
} StubData;

static long sleep_us; /* the kernel has no delegate data at hand: one value per process */
static int live; /* delegates created and not yet destroyed in this process */
/* One device runs one invoke at a time, whichever interpreter (or thread) asks, as
   libedgetpu serializes the interpreters that share an Edge TPU context. */
static pthread_mutex_t device = PTHREAD_MUTEX_INITIALIZER;

static TfLiteStatus sleep_invoke(TfLiteContext *context, void *node) {
    (void)context;
    (void)node;
    struct timespec t = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
    pthread_mutex_lock(&device);
    while (nanosleep(&t, &t) != 0) {
    }
    pthread_mutex_unlock(&device);
    return 0;
}

static TfLiteStatus claim_everything(TfLiteContext *context, TfLiteDelegate *delegate) {
    TfLiteIntArray *plan = NULL;
    if (context->GetExecutionPlan(context, &plan) != 0) return 1;
    TfLiteRegistration reg;
    memset(&reg, 0, sizeof(reg));
    reg.invoke = sleep_invoke;
    reg.builtin_code = 51; /* kTfLiteBuiltinDelegate */
    reg.custom_name = "StubSleepDelegate";
    reg.version = 1;
    return context->ReplaceNodeSubsetsWithDelegateKernels(context, reg, plan, delegate);
}

static void append(const char *path, const char *text);

static TfLiteStatus stub_prepare(TfLiteContext *context, TfLiteDelegate *delegate) {
    StubData *data = delegate->data_;
    if (data && (data->abort_on_prepare ||
                 (data->abort_if_exists[0] && access(data->abort_if_exists, F_OK) == 0))) {
        append(data->record, "aborting\n");
        abort();
    }
    if (data && data->invoke_us > 0) return claim_everything(context, delegate);
    return 0; /* replaces no nodes */
}

static void append(const char *path, const char *text) {
    if (!path[0]) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t num,
                                              void (*report_error)(const char *)) {
    /* The Python side declares num as a C int; keep only those bits. */
    int n = (int)(unsigned int)num;
    const char *record = getenv("STUB_DELEGATE_RECORD");
    const char *env_fail = getenv("STUB_DELEGATE_FAIL");
    const char *env_fail_if = getenv("STUB_DELEGATE_FAIL_IF_EXISTS");
    const char *env_device = getenv("STUB_DELEGATE_DEVICE");
    const char *env_abort_if = getenv("STUB_DELEGATE_ABORT_IF_EXISTS");
    const char *env_max = getenv("STUB_DELEGATE_MAX_INSTANCES");
    int fail = (env_fail && strcmp(env_fail, "1") == 0) ||
               (env_max && env_max[0] && live >= atoi(env_max)) ||
               (env_fail_if && env_fail_if[0] && access(env_fail_if, F_OK) == 0) ||
               (env_device && env_device[0] && access(env_device, F_OK) != 0);
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], "record") == 0) record = values[i];
        if (strcmp(keys[i], "fail") == 0 && strcmp(values[i], "1") == 0) fail = 1;
    }
    StubData *data = calloc(1, sizeof(StubData));
    if (!data) return NULL;
    if (record) snprintf(data->record, sizeof(data->record), "%s", record);
    if (env_abort_if) snprintf(data->abort_if_exists, sizeof(data->abort_if_exists), "%s",
                               env_abort_if);
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], "abort_on_prepare") == 0 && strcmp(values[i], "1") == 0)
            data->abort_on_prepare = 1;
        if (strcmp(keys[i], "abort_if_exists") == 0)
            snprintf(data->abort_if_exists, sizeof(data->abort_if_exists), "%s", values[i]);
        if (strcmp(keys[i], "invoke_us") == 0) data->invoke_us = atol(values[i]);
    }
    const char *env_invoke = getenv("STUB_DELEGATE_INVOKE_US");
    if (env_invoke && !data->invoke_us) data->invoke_us = atol(env_invoke);
    if (data->invoke_us > 0) sleep_us = data->invoke_us;
    for (int i = 0; i < n; i++) {
        char line[1024];
        snprintf(line, sizeof(line), "%s=%s\n", keys[i], values[i]);
        append(data->record, line);
    }
    if (fail) {
        append(data->record, "failed\n");
        free(data);
        if (report_error) report_error("stub delegate: told to fail");
        return NULL;
    }
    TfLiteDelegate *delegate = calloc(1, sizeof(TfLiteDelegate));
    if (!delegate) {
        free(data);
        return NULL;
    }
    delegate->data_ = data;
    delegate->Prepare = stub_prepare;
    live++;
    append(data->record, "created\n");
    return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate) {
    if (!delegate) return;
    live--;
    StubData *data = delegate->data_;
    if (data) {
        append(data->record, "destroyed\n");
        free(data);
    }
    free(delegate);
}
