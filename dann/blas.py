"""BLAS threads for small dense solves (logistic regressions, PCA)."""

import functools


def one_blas_thread(fn):
    """Run ``fn`` with numpy's / scipy's BLAS held to one thread (restored afterwards).

    For the small logistic regressions of the selection scores, SA and the proxy A-distance
    (a few thousand rows): there a multi-threaded BLAS only adds synchronisation, and with more
    threads than free cores it collapses. Measured on the 2-core CPU (density ratio + reverse
    validation, 2,000 x 1,200 features): 0.46 s with one BLAS thread, 0.66 s with two, 15.8 s with
    16. On the H200 machine (16 cores) a lone 15,000-step DANN run took 362 s, of which ~70 s were
    training steps, while the same runs inside the sweep's pool (2 BLAS threads per job) took ~90 s.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper
