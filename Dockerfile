# hubscan on CPU: slim Python, CPU-only torch, runs as a non-root user. No token is baked in:
# pass HF_TOKEN at run time (`docker run -e HF_TOKEN ...`).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# CPU wheels first, so the dependency resolution below does not pull a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
      "torch>=2.4,<3" "torchvision>=0.19,<1"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY hubscan ./hubscan
COPY policies ./policies
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 hubscan
USER hubscan
WORKDIR /home/hubscan
ENV HF_HOME=/home/hubscan/.cache/huggingface

ENTRYPOINT ["hubscan"]
CMD ["--help"]
