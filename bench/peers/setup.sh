#!/usr/bin/env bash
# Installs the peers that bench/peers/ compares ringtune with, from Debian's packages:
# PyTorch with Gloo, numpy, Open MPI with mpi4py, iperf3, and the OpenMP build of
# OpenBLAS that the torch_*.py scripts load in place of the reference BLAS. Run as root.
# The packages install into Debian's /usr/bin/python3, so the benchmark scripts run on
# that interpreter and not on another python3 that PATH may find first.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y python3-torch python3-numpy openmpi-bin python3-mpi4py iperf3 libopenblas0-openmp
/usr/bin/python3 -c 'import torch, numpy, mpi4py; print("torch", torch.__version__, "numpy", numpy.__version__, "mpi4py", mpi4py.__version__)'
