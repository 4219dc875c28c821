"""Test and benchmark scaffolding: real servers (S3, proxies), sample sessions, processes.

Never imported by the runtime package; tests find it on ``sys.path`` (the test
directory), benchmarks put the test directory there themselves.
"""
