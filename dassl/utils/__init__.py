from .atomic import atomic_write, remove_stale_temp_files, write_bytes_atomic, write_json_atomic, write_text_atomic
from .host_memory import keep_freed_memory
from .logger import Logger, setup_logger
from .meters import AverageMeter, MetricMeter
from .registry import Registry, check_availability, get_most_similar_str_to_a_from_b
from .rng import capture_rng_state, restore_rng_state
from .tools import (
    check_isfile,
    collect_env_info,
    import_submodules,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    set_cuda_math,
    set_random_seed,
    to_rgb,
    tolist_if_not,
    write_json,
)
from .torchtools import (
    CheckpointError,
    count_num_param,
    epoch_checkpoints,
    load_checkpoint,
    load_pretrained_weights,
    load_resume_checkpoint,
    load_trainable_state_dict,
    missing_model_message,
    prune_epoch_checkpoints,
    restore_checkpoint,
    resume_candidates,
    resume_from_checkpoint,
    save_checkpoint,
    trainable_state_dict,
)
