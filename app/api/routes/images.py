"""GET /inspections/{id}/image/annotated: the stored frame with the boxes, classes and confidences
drawn (OpenCV), as JPEG. The original frame is GET /inspections/{id}/image (routes/inspections.py)."""

from __future__ import annotations

import cv2
from fastapi import APIRouter, Response

from app import images
from app.annotate import draw_defects
from app.api.deps import SessionDep, SettingsDep
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.api.routes.inspections import IMAGE_BODY, stored_image

router = APIRouter(tags=["inspections"])


@router.get("/inspections/{inspection_id}/image/annotated", response_class=Response,
            summary="The stored frame with its defects drawn",
            responses={200: {"description": "JPEG of the frame with its boxes drawn",
                             "content": {"image/jpeg": IMAGE_BODY}},
                       **problem_responses(404, 410, 422, s404="no such inspection, or no stored image")})
def read_annotated_image(inspection_id: RowId, session: SessionDep,
                         settings: SettingsDep) -> Response:
    # A sync route: FastAPI runs it in the threadpool, so decoding and drawing do not block the loop.
    row, path = stored_image(session, settings.data_dir, inspection_id)
    defects = list(row.defects)
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise Problem(404, f"the image of inspection {inspection_id} is gone from the data directory",
                      reason="no_image")
    data = images.encode_jpeg(draw_defects(frame, defects), quality=90)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=5"})
