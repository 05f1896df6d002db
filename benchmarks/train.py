"""Trains one model with torch DDP and with bagua_ravnest algorithms, in the
same processes, on the same generated data and seeds, and reports speed and
loss per algorithm.

    python benchmarks/train.py --world-size 4 --algorithms ddp,gradient_allreduce --steps 50 --json out/train.json

Names in --algorithms: the baselines `ddp` (torch DDP on Gloo), `ddp_adam`
(torch DDP with torch.optim.Adam at --adam-lr: exact Adam, what qadam and
onebit_adam approximate), `ddp_fp16`
(with torch's fp16_compress_hook), `ddp_powersgd` (torch's PowerSGD hook,
rank 2, full-precision warm-up), `ddp_localsgd` (torch's post-local-SGD hook
with PeriodicModelAverager, period 4), `horovod`, or any bagua_ravnest
algorithm spec; options follow a colon and are comma-separated
(`gradient_allreduce:hierarchical=true,allreduce=inner`), and a spec may be
composed from parts (`codec=minmax_uint8,exchange=allreduce`). Every
algorithm trains with SGD (momentum 0.9, --lr) except `qadam` and
`onebit_adam`, which are Adam (bagua_ravnest.QAdamOptimizer, --adam-lr,
--adam-warmup-steps; `onebit_adam:precondition=true` sets its precondition).

With --bandwidth-mbit the ranks run in an emulated cluster with shaped links
(benchmarks/netem; needs root) and bytes_sent_per_step is read from each
rank's interface counters (the mean over ranks, per training step).

Algorithms take turns in --rounds blocks of steps, so that drifts of the
machine's speed affect all of them alike. Horovod trains in processes of its
own, beside a torch DDP of its own that its speed_vs_ddp refers to (its
background thread would slow everything else in the process). Training
time is the slowest rank's own total (for synchronous algorithms the sum of
each step's slowest rank; ranks of an asynchronous one do not wait for each
other); step_ms_median is the median of each step's slowest rank. Per
algorithm: samples_per_s (all ranks' samples over the training time,
warm-up steps excluded), step_ms_median, final_loss (mean over
ranks of the loss averaged over the last five steps), time_to_target_s (the
algorithm's own training time until that five-step mean first falls below
--target-loss), and the loss curve against that training time; and the
held-out loss (every --eval-every steps and at the end, on data no rank
trains on, outside the timed steps): heldout_loss at the last step (equal
samples for every algorithm), time_to_target_heldout_s (training time until
it first falls below --target-heldout-loss) and heldout_curve; and
heldout_loss_of_mean, the held-out loss after the last step of the mean of
the replicas (the consensus model that average_replicas() gives; equal to
heldout_loss where the replicas are equal).

--model charlm is the real-data task: a character-level transformer on the
Python standard library's source text (benchmarks/charlm.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as TorchDDP  # noqa: E402

import bagua_ravnest  # noqa: E402
from bagua_ravnest.launch import run_world, values  # noqa: E402
from allocator import CHOICES as MALLOC_CHOICES  # noqa: E402
from allocator import large_blocks_are_mapped, malloc_env  # noqa: E402
from machine import machine_info  # noqa: E402
from netem.network import network, tx_bytes  # noqa: E402
from workloads import MODELS, build_model, make_task  # noqa: E402

BASELINES = ("ddp", "ddp_adam", "ddp_fp16", "ddp_powersgd", "ddp_localsgd", "horovod")
LOCALSGD_PERIOD = 4
SMOOTHING = 5  # steps in the final loss and in the loss that decides time to target


def split_algorithms(text: str) -> list[str]:
    """'a,b:x=1,y=2,c' -> ['a', 'b:x=1,y=2', 'c'] (an option continues its spec);
    'ddp,codec=fp16,exchange=allreduce' -> ['ddp', 'codec=fp16,exchange=allreduce']."""
    return bagua_ravnest.split_algorithm_specs(text)


_horovod_server = None  # rank 0's rendezvous server, alive as long as the process


def _init_horovod(rank: int, world: int, gloo, net):
    """Horovod with its Gloo controller, set up as `horovodrun --gloo` does:
    a rendezvous server (run by rank 0, on its address of the network under
    test) and the per-slot environment. Idempotent."""
    global _horovod_server
    try:
        import horovod.torch as hvd
        from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
        from horovod.runner.http.http_server import RendezvousServer
    except ImportError as e:
        raise RuntimeError(
            f"the horovod baseline needs Horovod ({e}); build it with benchmarks/install_horovod.sh "
            f"(about 20 minutes; see docs/benchmarks.md)"
        ) from e
    if hvd.is_initialized():
        return hvd
    # Ranks of an emulated cluster are hosts of their own; on loopback, one host.
    hosts = ",".join(f"host{r}:1" for r in range(world)) if net.netns else f"localhost:{world}"
    plan = get_host_assignments(parse_hosts(hosts), world)
    port = torch.zeros(1, dtype=torch.int64)
    if rank == 0:
        _horovod_server = RendezvousServer(verbose=0)
        port[0] = _horovod_server.start()
        _horovod_server.init(plan)
    dist.broadcast(port, 0, group=gloo)
    slot = plan[rank]
    os.environ.update({
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": net.address_of(0),
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(int(port)),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": net.ifname,
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(slot.size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
    })
    hvd.init()
    return hvd


# How this benchmark configures an algorithm's own optimizer (the class its
# registry entry names): QAdamOptimizer is Adam at --adam-lr with an exact
# warm-up of --adam-warmup-steps.
OWN_OPTIMIZERS = {
    "QAdamOptimizer": lambda args: dict(lr=args.adam_lr, warmup_steps=args.adam_warmup_steps),
}


def own_optimizer(algorithm: str) -> str:
    """The bagua_ravnest optimizer class `algorithm` trains with ('' for the
    benchmark's SGD): its registry entry says."""
    name, _ = bagua_ravnest.parse_algorithm_spec(algorithm)
    if not name or name not in bagua_ravnest.algorithm_names():
        return ""
    return bagua_ravnest.describe_algorithm(name)["optimizer"]


def uses_adam(algorithm: str) -> bool:
    """Whether `algorithm` trains with Adam (ddp_adam, and the algorithms that
    run bagua_ravnest.QAdamOptimizer) rather than SGD."""
    return algorithm == "ddp_adam" or own_optimizer(algorithm) == "QAdamOptimizer"


def _option_value(text: str):
    """A canonical option value ('true', '4', '0.9') as Python's."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_own_optimizer(algorithm: str, params, args):
    """`algorithm`'s own optimizer over `params`: the benchmark's settings
    (OWN_OPTIMIZERS), then the options the spec names, which belong to the
    optimizer (it writes the algorithm's spec from them). Returns it and the
    bare algorithm name to wrap with."""
    cls_name = own_optimizer(algorithm)
    name, given = bagua_ravnest.parse_algorithm_spec(algorithm)
    # The registry checks the options and writes their values canonically
    # ('yes' -> 'true'); only the ones given override the benchmark's.
    world = args.world_size
    try:
        _, canonical = bagua_ravnest.parse_algorithm_spec(
            bagua_ravnest._C.canonical_spec(algorithm, 0, world, [0] * world))
    except RuntimeError as e:
        raise ValueError(str(e)) from e
    kwargs = OWN_OPTIMIZERS[cls_name](args) if cls_name in OWN_OPTIMIZERS else {}
    kwargs.update({k: _option_value(canonical.get(k, v)) for k, v in given.items()})
    try:
        return getattr(bagua_ravnest, cls_name)(params, **kwargs), name
    except (TypeError, ValueError) as e:
        raise ValueError(f"{algorithm!r}: its options go to bagua_ravnest.{cls_name}, which refuses them: {e}") from e


def _wrap(algorithm: str, model: nn.Module, gloo, optimizer_factory, warmup_steps: int, rank: int, world: int, net,
          args, bucket_cap_mb: float | None = None):
    """The model as trained by `algorithm`, its optimizer, and a function to
    call after each optimizer step (model averaging for local SGD)."""
    after_step = lambda: None  # noqa: E731
    if algorithm == "horovod":
        hvd = _init_horovod(rank, world, gloo, net)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = hvd.DistributedOptimizer(optimizer_factory(model), named_parameters=model.named_parameters())
        return model, opt, after_step
    if algorithm.startswith("ddp"):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook, post_localSGD_hook

        # PowerSGD chains all-reduces in future callbacks; with several buckets
        # the ranks would issue them in different orders, which Gloo (matching
        # collectives by order) cannot take. One bucket keeps one chain per step.
        cap = {} if bucket_cap_mb is None else {"bucket_cap_mb": bucket_cap_mb}
        if algorithm == "ddp_powersgd":
            cap = {"bucket_cap_mb": 1024}
        device = next(model.parameters()).device
        if device.type == "cuda":
            cap["device_ids"] = [device.index]
        group = gloo
        if algorithm == "ddp_nccl":
            # torch DDP's own path on a GPU per rank (NCCL refuses ranks
            # that share one: use the ddp row there, over Gloo).
            group = dist.new_group(backend="nccl")
        model = TorchDDP(model, process_group=group, **cap)
        if algorithm == "ddp_adam":
            # Exact Adam, the yardstick of qadam and onebit_adam: their
            # learning rate and torch's default betas and eps, as theirs.
            return model, torch.optim.Adam(model.parameters(), lr=args.adam_lr), after_step
        if algorithm == "ddp_fp16":
            model.register_comm_hook(gloo, default_hooks.fp16_compress_hook)
        elif algorithm == "ddp_powersgd":
            state = powerSGD_hook.PowerSGDState(process_group=gloo, matrix_approximation_rank=2,
                                                start_powerSGD_iter=max(2, warmup_steps))
            model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        elif algorithm == "ddp_localsgd":
            from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

            # After the warm-up each rank steps alone (a subgroup of itself);
            # every LOCALSGD_PERIOD steps the averager averages the models.
            alone = dist.new_subgroups(group_size=1, backend="gloo")[0]
            state = post_localSGD_hook.PostLocalSGDState(process_group=gloo, subgroup=alone,
                                                         start_localSGD_iter=warmup_steps)
            model.register_comm_hook(state, post_localSGD_hook.post_localSGD_hook)
            averager = PeriodicModelAverager(period=LOCALSGD_PERIOD, warmup_steps=warmup_steps, process_group=gloo)
            after_step = lambda: averager.average_parameters(model.parameters())  # noqa: E731
        elif algorithm not in ("ddp", "ddp_nccl"):
            raise ValueError(f"unknown baseline {algorithm!r}")
        return model, optimizer_factory(model), after_step
    cap = {} if bucket_cap_mb is None else {"bucket_cap_mb": bucket_cap_mb}
    if own_optimizer(algorithm):
        # An optimizer as much as an exchange (qadam's Adam, exact for the
        # warm-up steps, then with compressed momenta): the optimizer holds
        # the options and writes the spec.
        opt, name = make_own_optimizer(algorithm, model.parameters(), args)
        return bagua_ravnest.DistributedDataParallel(model, algorithm=name, optimizer=opt, **cap), opt, after_step
    opt = optimizer_factory(model)
    return bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt, **cap), opt, after_step


class _Trainer:
    """One algorithm's model, optimizer and data stream; trains in blocks so
    that algorithms can take turns on the machine."""

    def __init__(self, rank, world, algorithm, args, gloo, net):
        self.algorithm, self.args, self.ifname, self.gloo = algorithm, args, net.ifname, gloo
        self.device = torch.device(args.device)
        model = build_model(args.model, seed=args.seed).to(self.device)
        make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9)  # noqa: E731
        self.model, self.opt, self.after_step = _wrap(algorithm, model, gloo, make_opt, args.warmup_steps, rank, world,
                                                      net, args, args.bucket_cap_mb)
        self.task = make_task(args.model, rank, args.batch_size, seed=args.seed)
        # An algorithm with a thread of its own (async_model_average) would
        # keep talking while the others take their turns and while it is
        # evaluated: it is aborted between its blocks and around evaluation.
        self.pausable = "abort" in getattr(self.model, "algorithm_controls", [])
        self.paused = False
        self.held_out_set = tuple(t.to(self.device) for t in self.task.held_out())
        # (step, training seconds so far, held-out loss), every --eval-every steps and at the end.
        self.held_out: list[tuple[int, float, float]] = []
        self.heldout_of_mean: float | None = None  # after the last step (evaluate_mean)
        self.step_times: list[float] = []
        self.phases: list[tuple[float, float, float]] = []  # forward, backward, optimizer step (s)
        self.losses: list[float] = []
        self.step_bytes: list[int] = []  # on the wire, per step
        # Steps left out of the speed and byte figures: the common warm-up,
        # and for qadam/onebit_adam also their exact-Adam warm-up (their
        # steps before the switch run an uncompressed all-reduce) and the
        # switch step, which sets up once what every compressed step reuses
        # (the frozen denominators, the optimizer's sqrt(v), the exchange's
        # buffers): it is their compressed regime's first step, as step 0 is
        # every algorithm's. At least one compressed step stays timed.
        self.skip = args.warmup_steps
        if uses_adam(algorithm) and algorithm != "ddp_adam" and args.adam_warmup_steps < args.steps:
            self.skip = max(self.skip, min(args.adam_warmup_steps + 1, args.steps - 1))

    def _pause(self, paused: bool) -> None:
        if self.pausable and paused != self.paused:
            self.model.algorithm_control("abort" if paused else "resume")
            self.paused = paused

    def run(self, steps: int, progress=None) -> None:
        self._pause(False)
        # Bytes are counted from mark to mark, so none fall between steps.
        mark = tx_bytes(self.ifname)
        for _ in range(steps):
            x, y = (t.to(self.device) for t in self.task.batch())
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss = self.task.loss(self.model(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            self.opt.step()
            self.after_step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # a step is timed to its end on the device
            t3 = time.perf_counter()
            self.step_times.append(t3 - t0)
            self.phases.append((t1 - t0, t2 - t1, t3 - t2))
            sent = tx_bytes(self.ifname)
            self.step_bytes.append(sent - mark)
            mark = sent
            self.losses.append(float(loss.detach()))
            done = len(self.losses)
            if done % self.args.eval_every == 0 or done == self.args.steps:
                self.evaluate()
            if progress is not None:
                progress.update(1)
        # A rank's step can end while its own last bytes still wait in its
        # link's queue (it has all it needs from the others): they would
        # count in the next algorithm's block. Once every rank has passed a
        # barrier, each has received what it was sent, so the block's last
        # step gets them (and the barrier's few bytes).
        self._pause(True)
        if steps:
            dist.barrier(group=self.gloo)
            self.step_bytes[-1] += tx_bytes(self.ifname) - mark

    @torch.no_grad()
    def evaluate(self) -> None:
        """Held-out loss now (not part of any step's time)."""
        was_paused = self.paused
        self._pause(True)
        self.model.eval()
        try:
            x, y = self.held_out_set
            value = float(self.task.loss(self.model(x), y))
        finally:
            self.model.train()
        self._pause(was_paused)
        self.held_out.append((len(self.losses), sum(self.step_times), value))

    @torch.no_grad()
    def evaluate_mean(self, gloo) -> None:
        """Held-out loss of the replicas' mean (parameters and floating-point
        buffers averaged over the ranks in fp32), on a copy: training's state
        is left as it is. The same measure for every row, torch's too; once,
        after training, so a collective per tensor costs nothing that counts."""
        was_paused = self.paused
        self._pause(True)
        trained = getattr(self.model, "module", self.model)
        model = build_model(self.args.model, seed=self.args.seed).to(self.device)
        model.load_state_dict(trained.state_dict())
        for t in [p.data for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]:
            wide = t.double().cpu()  # as average_replicas(): equal replicas stay equal to the bit
            dist.all_reduce(wide, group=gloo)
            t.copy_(wide / dist.get_world_size(gloo))
        model.eval()
        x, y = self.held_out_set
        loss = self.task.loss(model(x), y).double().reshape(1).cpu()
        dist.all_reduce(loss, group=gloo)  # as heldout_loss: over each rank's held-out set
        self.heldout_of_mean = float(loss) / dist.get_world_size(gloo)
        self._pause(was_paused)

    def summary(self, world, gloo) -> dict:
        args = self.args
        # Training time is the slowest rank's own total. Ranks of a
        # synchronous algorithm wait for each other inside every step, so
        # this is the sum of the per-step maxima; ranks of an asynchronous
        # one do not, and that sum would charge every rank's slow steps.
        mine = torch.tensor(self.step_times, dtype=torch.float64)
        everyone = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(everyone, mine, group=gloo)
        per_rank = torch.stack(everyone)
        t = per_rank.max(dim=0).values  # each step's slowest rank: the median step
        loss = torch.tensor(self.losses, dtype=torch.float64)
        dist.all_reduce(loss, group=gloo)
        mean_loss = (loss / world).tolist()
        timed = t[self.skip :]
        timed_seconds = float(per_rank[:, self.skip :].sum(dim=1).max())
        # Loopback's counter is shared by all ranks: it already holds everyone's bytes.
        sent = torch.tensor([float(sum(self.step_bytes[self.skip :]))], dtype=torch.float64)
        if self.ifname != "lo":
            dist.all_reduce(sent, group=gloo)
        timed_steps = len(timed)
        # Where a step's time goes (medians; the slowest rank's): a wait for
        # communication shows in backward (DDP-style hooks) or step.
        phases = torch.tensor(self.phases[self.skip :] or [(0.0, 0.0, 0.0)], dtype=torch.float64)
        phases = phases.median(dim=0).values
        dist.all_reduce(phases, op=dist.ReduceOp.MAX, group=gloo)
        seconds = torch.cumsum(per_rank, 1).max(dim=0).values  # when every rank has done that many steps
        # Time to target: when the mean loss over the last SMOOTHING steps
        # first falls below it (one batch's loss is too noisy to decide).
        trailing = [statistics.fmean(mean_loss[max(0, i + 1 - SMOOTHING) : i + 1]) for i in range(len(mean_loss))]
        below = [i for i, v in enumerate(trailing) if args.target_loss is not None and v < args.target_loss]
        # Held-out loss: the mean over ranks (replicas of a synchronous
        # algorithm are identical; others' are not), at the same steps for all.
        held = torch.tensor([h[2] for h in self.held_out], dtype=torch.float64)
        dist.all_reduce(held, group=gloo)
        held = (held / world).tolist()
        held_steps = [h[0] for h in self.held_out]
        held_seconds = [float(seconds[s - 1]) for s in held_steps]
        reached = [i for i, v in enumerate(held) if args.target_heldout_loss is not None and v < args.target_heldout_loss]
        return {
            "algorithm": self.algorithm,
            "spec": getattr(self.model, "algorithm", "horovod (gloo)" if self.algorithm == "horovod" else
                            "torch DDP (nccl)" if self.algorithm == "ddp_nccl" else "torch DDP (gloo)"),
            "model": args.model,
            "device": args.device,
            "world_size": world,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "timed_steps": timed_steps,
            "samples_per_s": world * args.batch_size * len(timed) / timed_seconds,
            "step_ms_median": 1000 * statistics.median(timed.tolist()),
            "phase_ms_median": dict(zip(("forward", "backward", "step"), (1000 * phases).tolist())),
            "final_loss": statistics.fmean(mean_loss[-SMOOTHING:]),
            "bytes_sent_per_step": float(sent) / world / max(1, timed_steps),
            "time_to_target_s": float(seconds[below[0]]) if below else None,
            "heldout_loss": held[-1],
            "time_to_target_heldout_s": held_seconds[reached[0]] if reached else None,
            "heldout_curve": {"steps": held_steps, "seconds": held_seconds, "loss": held},
            "heldout_loss_of_mean": self.heldout_of_mean,
            "curve": {"seconds": seconds.tolist(), "loss": mean_loss},
        }


def _worker(rank, world, algorithms, args, net):
    torch.set_num_threads(args.threads)
    gloo = dist.new_group(backend="gloo")
    trainers = [_Trainer(rank, world, a, args, gloo, net) for a in algorithms]
    progress = None
    if rank == 0 and not args.quiet:
        from tqdm import tqdm

        progress = tqdm(total=args.steps * len(trainers), desc="training", unit="step", leave=False)
    # Algorithms take turns in blocks (alternating order), so slow drifts of
    # the machine affect all of them alike. The warm-up is its own block, so
    # byte counts cover timed steps only.
    rest = [len(b) for b in torch.arange(args.steps - args.warmup_steps).tensor_split(args.rounds) if len(b)]
    blocks = ([args.warmup_steps] if args.warmup_steps else []) + rest
    for i, block in enumerate(blocks):
        for trainer in trainers if i % 2 == 0 else reversed(trainers):
            dist.barrier(group=gloo)
            trainer.run(block, progress)
    if progress is not None:
        progress.close()
    for trainer in trainers:
        trainer.evaluate_mean(gloo)
    # What the allocator setting did in this rank (--malloc asks; glibc may refuse).
    mapped = large_blocks_are_mapped()
    return [dict(t.summary(world, gloo), large_blocks_mapped=mapped) for t in trainers]


def run(args) -> list[dict]:
    algorithms = split_algorithms(args.algorithms)
    for a in algorithms:
        name, _ = bagua_ravnest.parse_algorithm_spec(a)
        if name in BASELINES:
            continue
        if name and name not in bagua_ravnest.algorithm_names():
            raise SystemExit(
                f"unknown algorithm {name!r}; choose from {', '.join(BASELINES + tuple(bagua_ravnest.algorithm_names()))}"
            )
        try:
            if own_optimizer(a):
                opt, bare = make_own_optimizer(a, [torch.zeros(1, requires_grad=True)], args)
                bagua_ravnest._C.canonical_spec(opt.algorithm_spec(bare), 0, args.world_size, [0] * args.world_size)
            else:
                bagua_ravnest._C.canonical_spec(a, 0, args.world_size, [0] * args.world_size)
        except (RuntimeError, ValueError) as e:
            raise SystemExit(f"algorithm {a!r}: {e}") from e
    # Horovod's background thread cycles all the time once initialised, and
    # on a busy CPU it slows whatever else the process runs (measured: a
    # onebit_adam step 269 -> 330 ms with Horovod beside it). So Horovod
    # trains in processes of its own, beside a torch DDP of its own to
    # compare with.
    runs = [algorithms]
    if "horovod" in algorithms and set(algorithms) - {"ddp", "horovod"}:
        runs = [[a for a in algorithms if a != "horovod"], ["ddp", "horovod"]]
    rows = []
    with network(args.bandwidth_mbit, args.world_size) as net:
        for i, run_algorithms in enumerate(runs):
            env = {**malloc_env(args.malloc), **net.env}
            run_rows = values(run_world(_worker, args.world_size, run_algorithms, args, net, env=env,
                                        timeout=args.timeout, netns=net.netns, hostnames=net.hostnames))[0]
            base = next((r for r in run_rows if r["algorithm"] == "ddp"), None)
            for r in run_rows:
                r["network"] = net.label
                r["run"] = i
                r["speedup_vs_ddp"] = r["samples_per_s"] / base["samples_per_s"] if base else None
            # The second run's ddp is only Horovod's yardstick.
            rows += [r for r in run_rows if i == 0 or r["algorithm"] == "horovod"]
    return sorted(rows, key=lambda r: algorithms.index(r["algorithm"]))


def print_table(rows: list[dict]) -> None:
    print(f"{'algorithm':<40} {'samples/s':>10} {'step ms':>9} {'final loss':>11} {'vs ddp':>7}")
    for r in rows:
        speedup = f"{r['speedup_vs_ddp']:.2f}x" if r["speedup_vs_ddp"] else "-"
        print(f"{r['algorithm']:<40} {r['samples_per_s']:>10.1f} {r['step_ms_median']:>9.2f} "
              f"{r['final_loss']:>11.4f} {speedup:>7}")


def write_json(path: str, rows: list[dict], args) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": "train", "machine": machine_info(), "config": vars(args), "rows": rows}, f, indent=2)
    print(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--algorithms", default="ddp,gradient_allreduce")
    ap.add_argument("--model", choices=MODELS, default="mlp",
                    help="charlm: the real-data task (a character-level transformer on the standard library's "
                         "source text; benchmarks/charlm.py); mlp and convnet: generated data")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup-steps", type=int, default=5,
                    help="steps left out of the speed and byte figures (qadam and onebit_adam also leave out their "
                         "exact-Adam warm-up, --adam-warmup-steps, and the switch step after it, when the run goes "
                         "past it; rows say timed_steps)")
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--lr", type=float, default=0.05, help="SGD (momentum 0.9) learning rate of every algorithm but qadam")
    ap.add_argument("--adam-lr", type=float, default=0.001, help="learning rate of qadam's and onebit_adam's QAdamOptimizer")
    ap.add_argument("--adam-warmup-steps", type=int, default=10,
                    help="exact Adam steps of qadam and onebit_adam before compression (the optimizer's variance is exact until then)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bucket-cap-mb", type=float, default=None,
                    help="bucket size cap of every DDP-style wrapper (default: each one's own, 25 MiB)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--rounds", type=int, default=10, help="algorithms take turns this many times")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--bandwidth-mbit", help="emulated link rate(s) in Mbit/s: one, or one per rank (needs root)")
    ap.add_argument("--target-loss", type=float, default=None,
                    help="report the training time until the mean loss of the last 5 steps is below this")
    ap.add_argument("--target-heldout-loss", type=float, default=None,
                    help="report the training time until the held-out loss is below this")
    ap.add_argument("--eval-every", type=int, default=10, help="held-out loss every this many steps (and at the end)")
    ap.add_argument("--malloc", choices=MALLOC_CHOICES, default="tuned",
                    help="the ranks' glibc malloc settings, alike for every algorithm: tuned keeps freed memory in "
                         "the process (no page faults to get it back each step), system leaves glibc's defaults "
                         "(benchmarks/allocator.py)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where every rank's model lives (cuda: all ranks on cuda:0; the ddp_nccl row needs a GPU "
                         "per rank)")
    ap.add_argument("--json", dest="json_path")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must be larger than --warmup-steps")
    rows = run(args)
    print_table(rows)
    if args.json_path:
        write_json(args.json_path, rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
