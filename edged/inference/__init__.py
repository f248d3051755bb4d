"""The model: its file, the runtime and delegates, the worker process that runs
it, `edged inspect`.
"""
