"""The sparsepipe model server (FastAPI on uvicorn): KServe v2 routes, SageMaker, metrics."""

from .app import create_app, serve
from .config import EndpointConfig, ServerConfig, load_server_config

__all__ = ["EndpointConfig", "ServerConfig", "create_app", "load_server_config", "serve"]
