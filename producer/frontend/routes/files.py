"""``/v1/files``: upload (multipart, ``purpose=batch``), list, retrieve, content, delete.

Uploads are validated line by line before anything is stored (a bad file is a 400 naming
each line and reason) and stored on Kafka (``producer.jobs.batch.store``), so every front-end
instance serves them and they survive restarts. A batch's output and error files are listed
and served here too, under the key that owns the batch.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse

from producer.frontend.auth import Auth
from producer.frontend.routes.answers import HasBatches, answered, file_object, page
from schemas.batch import UPLOAD_FILE_SCHEMA, FileDeleted, FileObject, ListPage


class JsonLines(StreamingResponse):
    """A file's content, streamed: its media type is what the OpenAPI document declares."""

    media_type = "application/jsonl"


# The OpenAPI link from an upload to a batch of it, at the url its declared lines name.
_UPLOADED = {
    "links": {
        "CreateBatch": {
            "operationRef": "#/paths/~1v1~1batches/post",
            "requestBody": {
                "input_file_id": "$response.body#/id",
                "endpoint": "/v1/completion",
                "completion_window": "24h",
            },
        }
    }
}


def router(front: HasBatches, authenticated: Auth) -> APIRouter:
    """The files routes over the front end's batch service."""
    routes = APIRouter()
    service = front.batches

    @routes.post("/v1/files", response_model=FileObject, responses={200: _UPLOADED})
    async def create_file(
        file: Annotated[UploadFile, File(json_schema_extra=UPLOAD_FILE_SCHEMA)],
        # Declared as the one value taken; others get the service's message, not pydantic's.
        purpose: Annotated[str, Form(json_schema_extra={"enum": ["batch"]})],
        key_id: Annotated[str, Depends(authenticated)],
    ) -> FileObject:
        content = await file.read()
        with answered():
            record = await service.upload(key_id, file.filename or "upload.jsonl", purpose, content)
        return file_object(record)

    @routes.get("/v1/files", response_model=ListPage)
    async def list_files(
        key_id: Annotated[str, Depends(authenticated)],
        purpose: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
        order: Literal["asc", "desc"] = "desc",
    ) -> ListPage:
        files = [file_object(f) for f in service.files_of(key_id)]
        files = [f for f in files if purpose is None or f.purpose == purpose]
        if order == "asc":
            files.reverse()
        return page(files, [f.id for f in files], after, limit)

    @routes.get("/v1/files/{file_id}", response_model=FileObject)
    async def retrieve_file(
        file_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> FileObject:
        with answered():
            return file_object(service.file(key_id, file_id))

    @routes.get("/v1/files/{file_id}/content", response_class=JsonLines)
    async def file_content(
        file_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        with answered():
            file = service.file(key_id, file_id)
        return JsonLines(service.content(file))

    @routes.delete("/v1/files/{file_id}", response_model=FileDeleted)
    async def delete_file(
        file_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> FileDeleted:
        with answered():
            await service.delete_file(key_id, file_id)
        return FileDeleted(id=file_id, deleted=True)

    return routes
