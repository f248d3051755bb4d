"""Process, thread and OS plumbing: child processes, thread names, native
stderr, secrets, logging.
"""
