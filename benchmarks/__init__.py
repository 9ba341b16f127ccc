"""Side-by-side benchmarks of the CPRS engine and the compressors users would pick instead.

* ``python -m benchmarks.quality`` — what each method keeps at 2x-50x compression on held-out data;
* ``python -m benchmarks.speed`` — throughput and peak memory against context length;
* ``python -m benchmarks.report`` — PNG plots and ``RESULTS.md`` from the JSON results;
* ``benchmarks/run_all.sh [--quick]`` — all three.
"""
