# sparsepipe model server image; the default command serves in SageMaker mode (port 8080,
# model from /opt/ml/model). Build: docker build -t sparsepipe .
# Run locally: docker run -p 8080:8080 -v $PWD/my-model:/opt/ml/model -e SPARSEPIPE_TASK=ner sparsepipe
# For Ray / KubeRay (deploy/kuberay-rayservice.yaml): docker build --build-arg EXTRAS=ray -t sparsepipe-ray .

FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir "maturin>=1.5,<2" && maturin build --release --out /wheels

FROM python:3.11-slim
# the package extras to install: server (the default), or ray (Ray Serve and Ray Data, server too)
ARG EXTRAS=server
# wget: KubeRay's health probes call it inside Ray containers
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[${EXTRAS}]" && rm -rf /wheels
COPY deploy/sagemaker-entrypoint.sh /usr/local/bin/sagemaker-entrypoint
ENV SAGEMAKER_BIND_TO_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sagemaker-entrypoint"]
CMD ["serve"]
