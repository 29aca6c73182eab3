"""Input clips (video files, GIFs, frame folders) and atomic output folders."""
from .output import OutputFolder, check_output_dir
from .video import (DEFAULT_MAX_FRAMES, FOLDER_FPS, IMAGE_EXTENSIONS, MIN_FRAMES, VIDEO_EXTENSIONS, FrameSelection,
                    VideoFrames, list_frame_files, natural_key, read_frames)

__all__ = ["FrameSelection", "VideoFrames", "read_frames", "list_frame_files", "natural_key", "OutputFolder",
           "check_output_dir", "DEFAULT_MAX_FRAMES", "FOLDER_FPS", "IMAGE_EXTENSIONS", "MIN_FRAMES",
           "VIDEO_EXTENSIONS"]
