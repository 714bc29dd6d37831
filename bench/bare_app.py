"""The bare endpoint bench/ingest.py compares Rebound with: FastAPI, one POST route that reads
the body and answers 200 with the same JSON as Rebound's receiver, nothing else. Served the way
`rebound api` serves Rebound (uvicorn.run with its defaults: one process, access log on).

    .venv/bin/python bench/bare_app.py --port 8001"""

import argparse

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI(title="bare")


@app.post("/webhooks/shopify")
async def receive(request: Request) -> dict[str, str]:
    await request.body()
    return {"status": "accepted"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    options = parser.parse_args()
    uvicorn.run(app, host=options.host, port=options.port)
