"""The inspection service: a REST API and the web page for the line, over one detector loaded once.

Endpoints (all JSON; errors are ``{"detail": "<what went wrong>"}`` with a 4xx status):

* ``POST /v1/inspect`` — multipart field ``file``: one image → score, decision, regions, map PNGs;
* ``POST /v1/inspect-batch`` — multipart field ``files`` (repeated): several images scored together (needed
  by test-batch methods, which score a batch against itself);
* ``GET /v1/model`` — method, parameters, thresholds, limits, version; ``GET /v1/recent``,
  ``GET /v1/results/{id}`` — the last results;
* ``GET /healthz`` and the web page at ``/`` — never behind the API key.

With an API key configured every ``/v1`` call needs the header ``X-API-Key``. Request bodies pass
:class:`~lineguard.serve.uploads.UploadGuard` first: key checked before the body is read, size bounded, upload
timed, body spooled to a file, never held whole in memory.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

import lineguard
from lineguard.inspect import Scorer
from lineguard.scoring.threshold import NORMALIZED_THRESHOLD
from lineguard.serve.inspector import MAP_PNG_SCALE, Inspector, Limits, UploadError
from lineguard.serve.uploads import API_KEY_HEADER, UploadGuard, key_ok

STATIC = Path(__file__).parent / "static"


class Error(BaseModel):
    detail: str


class RegionBox(BaseModel):
    x0: int
    y0: int
    x1: int
    y1: int
    area: int
    peak: float


class InspectResult(BaseModel):
    id: int
    filename: str
    width: int
    height: int
    score: float
    normalized_score: float
    decision: str
    regions: list[RegionBox]
    seconds: float
    received: float
    overlay_png: str | None = None
    map_png: str | None = None
    mask_png: str | None = None


class BatchResult(BaseModel):
    results: list[InspectResult]


class RecentItem(BaseModel):
    id: int
    filename: str
    score: float
    normalized_score: float
    decision: str
    regions: int
    received: float


class Health(BaseModel):
    status: str


class ModelInfo(BaseModel):
    method: str
    params: dict
    uses_normal_images: bool
    image_size: int | list[int] | None  # S, [H, W]; None: a tiled or letterboxed model, images at their own size
    thresholds: dict[str, float]
    calibration: str
    normalized_threshold: float
    map_png_scale: float
    limits: dict[str, int]
    auth: bool
    version: str


ERRORS = {status: {"model": Error} for status in (400, 401, 404, 408, 413, 422)}
ImagesQuery = Annotated[bool, Query(description="Include the overlay, map and mask PNGs (base64).")]
API_KEY = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when the service was started "
                                                                          "with a key.")


def create_app(detector: Scorer, *, api_key: str | None = None, limits: Limits | None = None,
               history: int = 50) -> FastAPI:
    """The service for a fitted, calibrated ``detector``; ``api_key`` None or "" leaves the API open."""
    limits = limits or Limits()
    app = FastAPI(title="lineguard", version=lineguard.__version__,
                  description="Industrial visual anomaly detection: is this part defective, and where?")
    app.state.inspector = Inspector(detector, limits=limits, history=history)  # loaded and warm
    app.state.api_key = api_key
    app.add_middleware(UploadGuard, limits=limits, api_key=api_key)
    app.add_exception_handler(RequestValidationError, readable_validation_error)
    app.include_router(v1)
    app.include_router(public)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def readable_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"detail": f"invalid request: {problems}"}, 422)


def check_key(request: Request, key: str | None = Security(API_KEY)) -> None:  # the guard checked it; this documents it
    if not key_ok(request.app.state.api_key, key):
        raise HTTPException(401, f"missing or wrong API key (header {API_KEY_HEADER})")


def inspector_of(request: Request) -> Inspector:
    return request.app.state.inspector


InspectorDep = Annotated[Inspector, Depends(inspector_of)]
v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)], responses=ERRORS)
public = APIRouter()


async def run(inspector: Inspector, uploads: list[UploadFile], images: bool) -> list[dict]:
    files = [(upload.filename or "upload", upload.file) for upload in uploads]  # spooled, not read into memory
    try:
        return await run_in_threadpool(inspector.inspect, files, images=images)
    except UploadError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@v1.post("/inspect", response_model=InspectResult)
async def inspect(inspector: InspectorDep,
                  file: Annotated[UploadFile, File(description="One image (PNG, JPEG, BMP, TIFF).")],
                  images: ImagesQuery = True) -> dict:
    """Inspect one image: score, decision (``normalized_score >= 1.0`` is a defect), defect regions as boxes
    in the image's pixels, and PNGs of the heatmap overlay, the normalised map, the region mask."""
    if not inspector.detector.uses_normal_images:
        raise HTTPException(400, f"{inspector.detector.name} scores a batch of images against itself: send "
                                 "several images to /v1/inspect-batch")
    return (await run(inspector, [file], images))[0]


@v1.post("/inspect-batch", response_model=BatchResult)
async def inspect_batch(inspector: InspectorDep,
                        files: Annotated[list[UploadFile], File(description="Images, scored together.")],
                        images: ImagesQuery = True) -> dict:
    """Inspect several images in one call (for test-batch methods: scored against each other)."""
    if len(files) > inspector.limits.max_batch:
        raise HTTPException(413, f"{len(files)} files exceed the limit of {inspector.limits.max_batch} per batch")
    return {"results": await run(inspector, files, images)}


@v1.get("/model", response_model=ModelInfo)
def model(request: Request, inspector: InspectorDep) -> dict:
    """What is serving: method, parameters, thresholds and how they were calibrated, limits, version."""
    detector, thresholds = inspector.detector, inspector.detector.thresholds
    return {"method": detector.name, "params": detector.get_params(),
            "uses_normal_images": detector.uses_normal_images, "image_size": inspector.size,
            "thresholds": {k: v for k, v in asdict(thresholds).items() if isinstance(v, float)},
            "calibration": thresholds.calibration, "normalized_threshold": NORMALIZED_THRESHOLD,
            "map_png_scale": MAP_PNG_SCALE, "limits": asdict(inspector.limits),
            "auth": bool(request.app.state.api_key), "version": lineguard.__version__}


@v1.get("/recent", response_model=list[RecentItem])
def recent(inspector: InspectorDep) -> list[dict]:
    """The last results, newest first (kept in memory, a bounded number)."""
    return [{**{k: r[k] for k in RecentItem.model_fields if k != "regions"}, "regions": len(r["regions"])}
            for r in inspector.recent()]


@v1.get("/results/{result_id}", response_model=InspectResult)
def result(inspector: InspectorDep, result_id: int) -> dict:
    """One recent result in full, PNGs included."""
    found = inspector.result(result_id)
    if found is None:
        raise HTTPException(404, f"no recent result with id {result_id}")
    return found


@public.get("/healthz", response_model=Health)
def healthz() -> dict:
    """Liveness: the model is loaded and warm."""
    return {"status": "ok"}


@public.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service ``create_app`` made in this process until interrupted (one process: the model is loaded
    once, before this is called)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
