#!/bin/sh
# Container entry point. SageMaker starts the image as `docker run IMAGE serve`; any other
# arguments are passed to `sparsepipe serve`. The model is read from /opt/ml/model
# ($SPARSEPIPE_SAGEMAKER_MODEL_DIR overrides it), the port is $SAGEMAKER_BIND_TO_PORT or 8080,
# and $SPARSEPIPE_TASK names the task (default text-classification).
set -e
if [ "$1" = "serve" ]; then
    shift
fi
exec sparsepipe serve --integration sagemaker --task "${SPARSEPIPE_TASK:-text-classification}" "$@"
