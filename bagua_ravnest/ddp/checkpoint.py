"""The algorithm's state (momenta, residuals, neighbour copies) and its step
in the wrapper's ``state_dict``, under one key, as bytes: device-independent,
so a checkpoint written on a GPU loads on a CPU and back. Registered as
module state-dict hooks by the wrapper."""

from __future__ import annotations

import torch

STATE_KEY = "_bagua_algorithm_state"


def save_algorithm_state(module, state_dict, prefix, local_metadata) -> None:
    engine = module._engine
    # Work launched after the last optimizer step (a gossip exchange) lands
    # first, so that the state is the one every rank has at this step.
    engine.drain()
    if engine.moves_weights_in_background:
        # state_dict's tensors are views of the live weights, which the
        # algorithm's thread keeps moving: copy them while it is held off.
        engine.hold_weights(replace=False)
        try:
            for key, value in state_dict.items():
                if key.startswith(prefix) and isinstance(value, torch.Tensor):
                    state_dict[key] = value.detach().clone()
        finally:
            engine.release_weights()
    state = engine.state_dict()
    if not state and not engine.depends_on_step:
        return  # stateless algorithms keep exactly torch DDP's keys
    state_dict[prefix + STATE_KEY] = {
        "algorithm": module.algorithm,
        "step": torch.tensor(engine.step, dtype=torch.int64),
        "state": {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in state.items()},
    }


def load_algorithm_state(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                         error_msgs) -> None:
    engine = module._engine
    if engine.moves_weights_in_background:
        # Held until release_weights_after_load: the algorithm's thread must
        # neither write into the weights being loaded nor move them later by
        # a difference taken from the old ones.
        engine.hold_weights(replace=True)
    saved = state_dict.pop(prefix + STATE_KEY, None)
    if saved is None:
        if strict and (engine.state_dict() or engine.depends_on_step):
            missing_keys.append(prefix + STATE_KEY)
        return
    if saved["algorithm"] != module.algorithm:
        error_msgs.append(
            f"the checkpoint's algorithm state is for {saved['algorithm']!r}, this wrapper runs {module.algorithm!r}"
        )
        return
    try:
        engine.drain()
        engine.load_state_dict({k: bytes(v.cpu().numpy().tobytes()) for k, v in saved["state"].items()})
    except RuntimeError as e:
        error_msgs.append(str(e))
        return
    engine.step = int(saved["step"])


def release_weights_after_load(module, incompatible_keys) -> None:
    if module._engine.moves_weights_in_background:
        module._engine.release_weights()


def register(module) -> None:
    module.register_state_dict_post_hook(save_algorithm_state)
    module.register_load_state_dict_pre_hook(load_algorithm_state)
    module.register_load_state_dict_post_hook(release_weights_after_load)
