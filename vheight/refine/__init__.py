"""Landmark refinement: snapping endplate landmarks to the cortical edge, and
proposing the landmarks of a neighbouring vertebra.

Coordinates
-----------
A landmark is ``(x, y)`` in pixels of the full-resolution image: ``x`` is the
column (to the right), ``y`` the row (down), and the centre of the top-left
pixel is ``(0, 0)``.  Internally every direction, distance and search radius
is worked out in millimetre space (``x * col_spacing_mm``, ``y *
row_spacing_mm``), so films with non-square pixels are searched over the same
physical distance in every direction.  On an uncalibrated film a nominal
spacing is estimated from the size of the annotated vertebrae (see
:func:`search_spacing`) and millimetre figures are not reported.

The edge
--------
The image is expected bright where bone is dense (``Film.pixels``).  The
outer edge of the cortex is the transition from bright cortical bone to the
darker disc or soft tissue outside the body: along a direction pointing away
from the vertebral body, the intensity falls.  The image is smoothed with a
Gaussian of ``0.5 mm`` (per axis in pixels, so anisotropic spacing is
respected), its gradient is sampled bilinearly along profiles, and the
strongest fall within the search radius is located to sub-sample precision
with a parabola through the three samples around it.

An edge is accepted only when the peak fall is well above the noise: above
``EDGE_NOISE_FACTOR`` times the robust (median absolute deviation) standard
deviation of the gradient in the neighbourhood, and above a small fraction of
the film's dynamic range.  When a second, distinct fall nearly as strong lies
within the radius (a double contour), the point is ambiguous.  In both cases
the point is left where it is and flagged.

Per point
---------
- Corners (``*_anterior``, ``*_posterior``): the corner of the body outline,
  where the endplate edge meets the wall edge.  The endplate edge is found
  on profiles along the endplate normal, taken 1 to 6 mm inside the corner
  along the endplate, and a line is fitted to it robustly; a parabola
  replaces the line when it bends into the body significantly (a biconcave
  or irregular endplate bends within those 6 mm, and a line through the
  bend passes outside the corner).  The wall edge is then searched along the
  endplate direction, inside that line (within the cortex), at depths of
  0.2 to 0.8 mm: the end of the endplate cortex at each depth, and the line
  through those ends followed to the endplate edge (a wall that leans or is
  waisted next to the corner ends elsewhere at 0.5 mm depth than at the
  edge).  When that end is not clear, the wall's own edge is found on
  profiles across the wall 1 to 6 mm below (above) the corner and the corner
  is the intersection of the two lines; when neither is clear, the corner
  only moves across the endplate (``weak_wall_edge``).  This is repeated
  once from the new corner when it moved more than 0.5 mm.
- Corner check: once the corners of an endplate are found, each is checked
  along the chord of the refined corners (steadier than the chord of the
  corners as placed): moved across the endplate onto the edge 0.75 to 1.25
  mm inside it (the endplate right next to the corner, which the 1 to 6 mm
  line can miss by a fraction of a millimetre), along the endplate onto the
  end of the cortex, and across once more; each step is a correction of at
  most 0.5 mm, never a new search.
- Middle points (``*_middle``): on the line through the midpoint of the
  (refined) corners of their endplate, parallel to the vertebra's axis (the
  mean direction of its anterior and posterior walls, corner to corner), and
  snapped to the edge along that line on five profiles within 0.5 mm of it,
  so a biconcave endplate is followed.  The middle height is thereby
  measured parallel to the anterior and posterior heights, the point midway
  between the walls.  (The point of the endplate equidistant from its
  corners differs from it on a wedged vertebra with a concave endplate by
  the concavity times the tangent of the endplate's tilt to the walls: 0.2
  mm for a 3.5 mm concavity tilted by 3.5 degrees.)  Without all four
  corners, or when the walls lean more than 20 degrees from the endplate
  normal, the normal is used.  When a corner of the endplate is not found,
  the middle point keeps its place along the endplate.
- Beyond the wall: a corner found more than 2 mm beyond the line of its
  wall (through the same-side corner of the other endplate, perpendicular
  to the inferior endplate) is on something outside the body; it is left
  where it was placed and flagged ``rejected_edge``.  Behind, a superior
  posterior corner followed the endplate's band onto a pedicle column
  rising flush with the endplate; in front, an anterior corner took a
  spur's tip, the edge of the soft tissue in front of the body, or a rib's
  edge crossing the corner.  The other corners serve as refined in the same
  pass (when not flagged), or as placed when they are not being refined (a
  snap of one point).
- Second chance: a point whose own search window holds no edge (placed
  further than the radius from it) is searched again from where the
  vertebra's refined landmarks put it; it is then reported ``reseeded`` and
  may have moved up to twice the radius.
- A doubled endplate contour (two falls 1 to 2.8 mm apart across the
  endplate, the second at least 0.45 as strong, the disc darker beyond the
  outer one: the two rims of a tilted or concave endplate) is taken midway
  between the two, the convention of measurements.md, and the point is
  flagged ``doubled``; so is a closer pair, 0.6 to 1.6 mm apart, which the
  0.5 mm smoothing merges into one fall and the fine scale splits.  Any
  other double edge across an endplate (two falls of similar strength) is
  settled by the darker outside: the outer edge of an endplate faces the
  disc.  Otherwise the point is ambiguous and left alone.
- Spurs: at an anterior corner, when the cortex ends more than 1 mm
  beyond the line of the wall (3 to 12 mm from the corner, past the base of
  a spur), the bone beyond is an osteophyte and the corner is the meeting
  point of the endplate and wall lines (``spur_excluded``).  That wall line
  is the straight line along which the mean fall over all eleven profiles
  is strongest (half the threshold suffices for the mean of so many), not
  a fit through each profile's own edge: a faint wall, with the edge of
  the soft tissue in front of it nearly as strong, is seen by few profiles
  alone.

Stability
---------
Stable by construction: a vertebra's refinement is repeated from its own
result until a pass moves no point more than 0.08 mm (at most five passes),
and the position that pass started from, a verified fixed point, is the
result; a vertebra whose first pass moves no point more than 0.25 mm (the
precision of the search) keeps its points exactly where they are.  So
refining a refined annotation leaves it where it is.  A point that keeps
moving has no single position the edges support: it is put back where it was
placed and flagged ``unstable``.  The other points, though, were refined
around where it had been, so the vertebra as it would be returned may be no
fixed point: it is refined again from there, the same search a second refine
runs, and returned once that refine keeps it (moves no point more than 0.08
mm and leaves none unsettled); else that refine's result is looked at the
same way, twice in all, and the last returned.  On the benchmark's films,
two sets of 240 refines from clicks, a second refine moved a point more than
0.1 mm after 2 and 2 of them (up to 2.0 and 0.2 mm); 8 and 14 (up to 2.6 and
3.5 mm) when the vertebra was instead refined again with the same patch and
returned unchecked.  Points that keep moving by no more than 0.25
mm from where a pass began (wandering or cycling by less than the search
tells apart) are left where the last such pass began, flagged ``unstable``:
a second refine keeps that vertebra (put back at their clicks, with the
others refined around where they had been, the vertebra was no fixed
point).  A point found on an edge outside the body
(``rejected_edge``) goes back where it was placed for the passes that follow
too.  Likewise a point that one pass moved without a doubt and a later pass,
from where it was moved, finds only with one (a weak wall, an ambiguous or
no edge): nothing confirms the edge it was moved onto, so it is left where
it was placed with that flag (it used to keep the first move, unflagged or
with its place along the endplate from that move).  A pass is a function of
the points it starts from and of the image alone, not of the patch searched:
the patch lies on a grid of 128 pixels and its slow background is reduced by
a power of two on the image's own grid (so two patches agree where they
overlap), and each pass takes its edge threshold from the noise around its
own starting points, sampled on the image's grid. So the pass that found a
fixed point is repeated exactly by a second refine from it (which then keeps
every point), and a vertebra left with unstable points is refined again
exactly as its last look at it was.  A broad fall (a dense ramp of cement or
sclerosis under the endplate) is located on the fine scale's own maximum,
even at the border of its window, so it does not flip between the coarse and
the fine peak with the start.

The endplate normal of a point is perpendicular to the line through the
corners of its endplate and points away from the centre of the vertebra's
landmarks (superior endplate: towards the head; inferior: towards the feet).
"""

from vheight.refine.model import (
    AMBIGUITY_RATIO,
    AMBIGUITY_SEPARATION_MM,
    BACKGROUND_MM,
    DEFAULT_RADIUS_MM,
    EDGE_NOISE_FACTOR,
    FINE_SMOOTHING_MM,
    MIN_CONTRAST_FRACTION,
    NOMINAL_SPACING_MM,
    NOTE_FLAGS,
    SMOOTHING_MM,
    PointMove,
    RefineFlag,
    RefineResult,
    is_doubt,
)
from vheight.refine.proposals import predict_level, propose_level, propose_level_result
from vheight.refine.snap import refine_annotation, refine_point, search_spacing

__all__ = [
    "AMBIGUITY_RATIO",
    "AMBIGUITY_SEPARATION_MM",
    "BACKGROUND_MM",
    "DEFAULT_RADIUS_MM",
    "EDGE_NOISE_FACTOR",
    "FINE_SMOOTHING_MM",
    "MIN_CONTRAST_FRACTION",
    "NOMINAL_SPACING_MM",
    "NOTE_FLAGS",
    "SMOOTHING_MM",
    "PointMove",
    "RefineFlag",
    "RefineResult",
    "is_doubt",
    "predict_level",
    "propose_level",
    "propose_level_result",
    "refine_annotation",
    "refine_point",
    "search_spacing",
]
