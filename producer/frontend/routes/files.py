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
from schemas.batch import FileDeleted, FileObject, ListPage


def router(front: HasBatches, authenticated: Auth) -> APIRouter:
    """The files routes over the front end's batch service."""
    routes = APIRouter()
    service = front.batches

    @routes.post("/v1/files", response_model=FileObject)
    async def create_file(
        file: Annotated[UploadFile, File()],
        purpose: Annotated[str, Form()],
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

    @routes.get("/v1/files/{file_id}/content")
    async def file_content(
        file_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> Response:
        with answered():
            file = service.file(key_id, file_id)
        return StreamingResponse(service.content(file), media_type="application/jsonl")

    @routes.delete("/v1/files/{file_id}", response_model=FileDeleted)
    async def delete_file(
        file_id: str, key_id: Annotated[str, Depends(authenticated)]
    ) -> FileDeleted:
        with answered():
            await service.delete_file(key_id, file_id)
        return FileDeleted(id=file_id, deleted=True)

    return routes
