"""The paste mask of one swapped face, shared by the model engines' `paste` phase.

The configured masks (`fusionray.faces.mask.MaskRecipe`) are combined by the per-pixel minimum
in crop space: occlusion is read from the target crop (what covers the target's face must stay);
the regions from the swapped face (the new face's own skin, brows, lips), as FaceFusion does;
area and mouth from the target's 68 landmarks mapped into the crop by the job's matrix.
"""

from __future__ import annotations

from fusionray.faces.mask import MaskRecipe, build_crop_mask
from fusionray.faces.occlusion import FaceOccluder
from fusionray.faces.parser import FaceParser
from fusionray.swap.base import FaceJob
from fusionray.types import FloatArray, FrameBGR


def job_crop_mask(job: FaceJob, swapped: FrameBGR, *, recipe: MaskRecipe, box: FloatArray,
                  occluder: FaceOccluder | None, parser: FaceParser | None) -> FloatArray:
    """(S, S) float32 mask in [0, 1] for one job's swapped (S, S, 3) face.

    Args:
        job: the job (its `crop` for occlusion, `landmarks_68` and `matrix` for area/mouth).
        swapped: the face the model made, interleaved back (`FaceJob.model_output`).
        recipe: which masks to combine; box: the engine's feathered box/face mask (S, S).
        occluder, parser: the models of the occlusion and region masks (None: not configured).

    Raises:
        ValueError: the occlusion mask is configured but the job has no target crop.
    """
    if recipe.types == ("box",):
        return box
    in_crop = (None if job.landmarks_68 is None
               else job.landmarks_68 @ job.matrix[:, :2].T + job.matrix[:, 2])
    occlusion = None
    if occluder is not None:
        if job.crop is None:
            raise ValueError("The occlusion mask needs the job's target crop (from prepare())")
        occlusion = occluder.mask(job.crop)
    return build_crop_mask(recipe, box, occlusion=occlusion,
                           region=parser.mask(swapped) if parser is not None else None,
                           landmarks_68=in_crop)
