"""All configuration in one pydantic-settings class, built once at the CLI edge and passed down."""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_path
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_MODEL = Path(__file__).parent / "models" / "default.onnx"


def _default_store() -> Path:
    return user_data_path("audiosim") / "store"


class Settings(BaseSettings):
    """Environment variables `AUDIOSIM_<NAME>` and a `.env` file set these; CLI options override them."""

    model_config = SettingsConfigDict(env_prefix="AUDIOSIM_", env_file=".env", extra="ignore")

    store: Path = Field(default_factory=_default_store, description="directory of the embedded store")
    qdrant_url: str | None = Field(default=None, description="Qdrant server URL; set it to use server mode")
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key for the Qdrant server")
    collection: str = Field(default="audiosim", min_length=1, description="collection name")
    model: Path = Field(default=SHIPPED_MODEL, description="encoder model (.onnx, or a .pt training checkpoint)")
    batch_size: int = Field(default=64, ge=1, le=4096, description="clips per encode and upsert batch")
    workers: int | None = Field(
        default=None, ge=0, description="decode processes (0: in-process; unset: one per core for large jobs)"
    )
    lock_timeout: float = Field(default=30.0, ge=0, description="seconds to wait for a locked store")
    shards: int = Field(default=1, ge=1, description="server mode: shard count of a new collection")
    replication_factor: int = Field(default=1, ge=1, description="server mode: replicas of a new collection")
    on_disk: bool = Field(default=False, description="server mode: keep vectors on disk (mmap)")
    timeout: float = Field(default=30.0, gt=0, description="server mode: request timeout in seconds")

    @property
    def server_mode(self) -> bool:
        return bool(self.qdrant_url)
