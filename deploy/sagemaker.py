"""Deploy a sparsepipe server image to Amazon SageMaker and invoke it (boto3).

    python deploy/sagemaker.py deploy --name sentiment \\
        --image-uri ACCOUNT.dkr.ecr.REGION.amazonaws.com/sparsepipe:latest \\
        --role-arn arn:aws:iam::ACCOUNT:role/SageMakerRole --model-data s3://bucket/model.tar.gz \\
        --task text-classification --instance-type ml.c5.xlarge
    python deploy/sagemaker.py invoke --name sentiment --body '{"sequences": ["I love it"]}'
    python deploy/sagemaker.py delete --name sentiment

The image is the repository's Dockerfile pushed to ECR; ``--model-data`` is a tar.gz of a model
directory (model.onnx, config.json, tokenizer files), unpacked by SageMaker into /opt/ml/model.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

__all__ = ["create_endpoint", "delete_endpoint", "deploy", "invoke", "wait_in_service"]


def _client(service: str, region: Optional[str]) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def deploy(
    name: str,
    *,
    image_uri: str,
    role_arn: str,
    model_data: Optional[str] = None,
    task: str = "text-classification",
    instance_type: str = "ml.c5.xlarge",
    instance_count: int = 1,
    env: Optional[dict[str, str]] = None,
    region: Optional[str] = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Creates the model, endpoint config and endpoint ``name``; waits until it is in service."""
    sm = _client("sagemaker", region)
    container: dict[str, Any] = {
        "Image": image_uri,
        "Environment": {"SPARSEPIPE_TASK": task, **(env or {})},
    }
    if model_data:
        container["ModelDataUrl"] = model_data
    sm.create_model(ModelName=name, ExecutionRoleArn=role_arn, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    create_endpoint(name, region=region)
    if wait:
        wait_in_service(name, region=region)
    return sm.describe_endpoint(EndpointName=name)


def create_endpoint(name: str, *, region: Optional[str] = None) -> str:
    """Creates endpoint ``name`` from the endpoint config of the same name; returns its ARN."""
    return _client("sagemaker", region).create_endpoint(EndpointName=name, EndpointConfigName=name)[
        "EndpointArn"
    ]


def wait_in_service(
    name: str, *, region: Optional[str] = None, delay: int = 30, attempts: int = 60
) -> None:
    """Blocks until endpoint ``name`` is InService (boto3 waiter); raises if it fails."""
    waiter = _client("sagemaker", region).get_waiter("endpoint_in_service")
    waiter.wait(EndpointName=name, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})


def invoke(
    name: str,
    body: Any,
    *,
    content_type: str = "application/json",
    region: Optional[str] = None,
) -> Any:
    """Sends ``body`` (dict: JSON; bytes: an image) to endpoint ``name``; returns the reply."""
    is_raw = isinstance(body, (bytes, bytearray))
    payload = bytes(body) if is_raw else json.dumps(body).encode()
    reply = _client("sagemaker-runtime", region).invoke_endpoint(
        EndpointName=name, ContentType=content_type, Accept="application/json", Body=payload
    )
    data = reply["Body"].read()
    try:
        return json.loads(data)
    except ValueError:
        return data


def delete_endpoint(name: str, *, region: Optional[str] = None) -> None:
    """Deletes endpoint ``name``, its endpoint config and its model."""
    sm = _client("sagemaker", region)
    sm.delete_endpoint(EndpointName=name)
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: deploy, invoke or delete."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--name", required=True)
    d.add_argument("--image-uri", required=True)
    d.add_argument("--role-arn", required=True)
    d.add_argument("--model-data", default=None)
    d.add_argument("--task", default="text-classification")
    d.add_argument("--instance-type", default="ml.c5.xlarge")
    d.add_argument("--instance-count", type=int, default=1)
    d.add_argument("--no-wait", action="store_true")
    i = sub.add_parser("invoke")
    i.add_argument("--name", required=True)
    i.add_argument("--body", required=True, help="JSON, or @path for an image file")
    i.add_argument("--content-type", default=None)
    x = sub.add_parser("delete")
    x.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.command == "deploy":
        desc = deploy(
            args.name,
            image_uri=args.image_uri,
            role_arn=args.role_arn,
            model_data=args.model_data,
            task=args.task,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            region=args.region,
            wait=not args.no_wait,
        )
        print(f"{desc['EndpointName']}: {desc['EndpointStatus']}")
    elif args.command == "invoke":
        if args.body.startswith("@"):
            with open(args.body[1:], "rb") as f:
                body: Any = f.read()
            content_type = args.content_type or "image/png"
        else:
            body = json.loads(args.body)
            content_type = args.content_type or "application/json"
        print(json.dumps(invoke(args.name, body, content_type=content_type, region=args.region)))
    else:
        delete_endpoint(args.name, region=args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
