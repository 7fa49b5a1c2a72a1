"""Procedural synthetic indoor RGB-D generator: the embedded default dataset.

No real dataset can be downloaded in this environment, yet the paper's claim is about *zero-shot
cross-dataset* generalisation, so one synthetic dataset is not enough: we need several domains that
differ the way Hypersim, HM3D, Replica and NYUv2/VA differ (room scale, clutter, palettes, lighting,
camera height/FOV and sensor artefacts). Each domain here is one `DomainSpec`; training on one domain
and testing on the others is then a genuine domain shift for a monocular depth network.

Geometry is exact: rays are cast against axis-aligned boxes (the room, the "pocket" boxes seen through
doorways and windows, and furniture), and depth is the planar z of the hit in the camera frame. A room is
drawn from (seed, domain, scene id) and a frame's camera and sensor noise from (seed, domain, index), so a
sample is bit-identical however it is batched, and consecutive frames of one scene share their room.

Conventions: world y is up, the floor is y = 0 and the room spans [0, Lx] x [0, H] x [0, Lz]. The
camera frame is OpenCV's (x right, y down, z forward) and intrinsics put pixel centres at integer
coordinates, so cx = (width - 1) / 2.

Modules, in the order a frame is made: specs (the domains), textures and materials, draft / rooms / openings /
furniture (room building), scene and camera, raycast (depth), shading and sensor (the image), render (the API).
"""

from tasks.preprocess.synthetic.camera import Camera, look_camera
from tasks.preprocess.synthetic.materials import Materials
from tasks.preprocess.synthetic.raycast import trace_depth
from tasks.preprocess.synthetic.render import build_scene, generate, render_batch, sample_view
from tasks.preprocess.synthetic.rooms import empty_room_scene
from tasks.preprocess.synthetic.scene import Scene
from tasks.preprocess.synthetic.specs import DOMAINS, FURNITURE, DomainSpec, FurnitureKind
from tasks.preprocess.synthetic.textures import PATTERN_NAMES, PATTERNS

__all__ = ["DOMAINS", "FURNITURE", "PATTERNS", "PATTERN_NAMES", "Camera", "DomainSpec", "FurnitureKind", "Materials",
           "Scene", "build_scene", "empty_room_scene", "generate", "look_camera", "render_batch", "sample_view",
           "trace_depth"]
