"""BLAS threads for small dense solves (logistic regressions, PCA)."""

import functools


def one_blas_thread(fn):
    """Run ``fn`` with numpy's / scipy's BLAS held to one thread (restored afterwards).

    For the small logistic regressions of the selection scores, SA and the proxy A-distance
    (a few thousand rows): there a multi-threaded BLAS only adds synchronisation, and with more
    threads than free cores it collapses (measurements: experiments/notes/history.md).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper
