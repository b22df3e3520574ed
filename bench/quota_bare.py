"""The baseline of the HTTP quota benchmark: a bare FastAPI endpoint doing one EVALSHA."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from pydantic import BaseModel

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class Check(BaseModel):
    model: str
    estimated_tokens: int = 0


def create_app() -> FastAPI:
    url = os.environ["BENCH_REDIS_URL"]
    key = os.environ.get("BENCH_KEY", "bench:bare")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=100, timeout=5)
        app.state.redis = aioredis.Redis(connection_pool=pool)
        await app.state.redis.script_load(SCRIPT)
        yield
        await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v1/billing/quota/check")
    async def check(data: Check, request: Request) -> dict[str, int]:
        used = await request.app.state.redis.evalsha(SHA, 1, key, data.estimated_tokens)
        return {"used": int(used)}

    return app
