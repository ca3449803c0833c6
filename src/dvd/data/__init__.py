"""Everything that reads pixels and depth from disk (or renders them), for training and for evaluation alike.

- `raster`      the shared raster I/O: RGB, 16-bit PNG and .npy depth, masks and mattes, the KITTI-benchmark crop,
                the nearest and bilinear resizes, root and file checks
- `naming`      natural (numeric-aware) file-name order
- `procedural`  the procedural world: rooms with exact depth and cameras, rendered from an integer seed
- `train`       training readers (Hypersim, Virtual KITTI 2, TartanAir, folders, synthetic), the source mixture
                and the truncated-disparity target
- `benchmarks`  evaluation readers (KITTI, ScanNet, Bonn, Sintel, NYUv2, DIODE, ETH3D, folders, synthetic), their
                pinned splits and the registry by name
"""
