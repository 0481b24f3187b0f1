import os

from fastapi import FastAPI, Request

from skene_pg.fastapi import SkeneGate

app = FastAPI()
app.add_middleware(
    SkeneGate,
    database_url=os.environ["DATABASE_URL"],
    customer=lambda request: request.headers.get("x-api-key"),  # look your key up instead
)


@app.post("/v1/summarize")
async def summarize(request: Request) -> dict[str, str]:
    return {"summary": "Short and sweet."}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}  # not matched by skene.toml: never counted
