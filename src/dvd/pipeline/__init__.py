"""DVDPipeline, a diffusers DiffusionPipeline (dvd.pipeline.dvd_pipeline), and the checks on its inputs."""
