"""The "bagua" backend with CUDA tensors: they go to its inner NCCL backend,
CPU tensors to its own ring and Gloo, in one process group.

Skipped without a CUDA device. World 1: NCCL refuses two ranks on one GPU
and the machines this project is lent have one. At world 1 every collective
returns its input, so each test also asks torch's profiler whether NCCL ran
the operation (NCCL names its work "nccl:<op>"): a CUDA tensor that did not
reach NCCL fails, and so does a CPU tensor that did.
"""

import pytest
import torch
import torch.distributed as dist

from bagua_ravnest.launch import run_world, values

needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and dist.is_nccl_available()),
    reason="needs a CUDA device and a torch with NCCL",
)


def _ran(fn):
    """fn() under torch's profiler; the names of the operations recorded."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events()})


def _collectives(rank, world):
    torch.cuda.set_device(0)
    problems = []

    def check(what, op, result, expected, on_nccl):
        names = _ran(op)
        if any(n.startswith("nccl:") for n in names) != on_nccl:
            problems.append(f"{what}: {'no' if on_nccl else 'an'} nccl: operation ran "
                            f"(recorded: {[n for n in names if ':' in n]})")
        if result.device.type != expected.device.type or not torch.equal(result.cpu(), expected.cpu()):
            problems.append(f"{what}: {result.flatten()[:4].tolist()} on {result.device}, expected "
                            f"{expected.flatten()[:4].tolist()} on {expected.device}")

    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16, torch.int64):
        for device in ("cuda", "cpu"):
            nccl = device == "cuda"
            x = torch.randint(-9, 10, (1003,), generator=g).to(dtype).to(device)
            t = x.clone()
            check(f"all_reduce {dtype} {device}", lambda: dist.all_reduce(t), t, x, nccl)
            b = x.clone()
            check(f"broadcast {dtype} {device}", lambda: dist.broadcast(b, src=0), b, x, nccl)
            out = [torch.empty_like(x)]
            check(f"all_gather {dtype} {device}", lambda: dist.all_gather(out, x), out[0], x, nccl)
            flat = torch.empty_like(x)
            check(f"all_gather_into_tensor {dtype} {device}", lambda: dist.all_gather_into_tensor(flat, x), flat, x,
                  nccl)
            rs = torch.empty_like(x)
            check(f"reduce_scatter_tensor {dtype} {device}", lambda: dist.reduce_scatter_tensor(rs, x), rs, x, nccl)
            a2a = torch.empty_like(x)
            check(f"all_to_all_single {dtype} {device}", lambda: dist.all_to_all_single(a2a, x), a2a, x, nccl)
    # An async CUDA all-reduce with a chained future, as a DDP comm hook uses it.
    t = torch.arange(8, dtype=torch.float32, device="cuda")
    fut = dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0] * 2)
    doubled = fut.wait()
    if not torch.equal(doubled.cpu(), torch.arange(8, dtype=torch.float32) * 2):
        problems.append(f"future.then on CUDA: {doubled.tolist()}")
    dist.barrier()
    return problems


@needs_cuda
def test_cuda_tensors_go_to_nccl_and_cpu_tensors_to_gloo_in_one_group():
    (problems,) = values(run_world(_collectives, 1, timeout=300))
    assert not problems, "\n".join(problems)


def _torch_ddp(rank, world):
    torch.cuda.set_device(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)).cuda()
    reference = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)).cuda()
    reference.load_state_dict(model.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    names = set()
    for step in range(5):
        x = torch.randn(16, 32, generator=g).cuda()
        y = torch.randn(16, 4, generator=g).cuda()
        for net, o in ((ddp, opt), (reference, ref_opt)):
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            if net is ddp:
                names.update(_ran(loss.backward))
            else:
                loss.backward()
            o.step()
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    return same, sorted(n for n in names if n.startswith(("nccl:", "gloo:", "bagua:")))


@needs_cuda
def test_torch_ddp_on_a_cuda_model_reduces_through_nccl():
    (result,) = values(run_world(_torch_ddp, 1, timeout=300))
    same, comms = result
    assert any(n.startswith("nccl:all_reduce") for n in comms), comms
    assert same, "torch DDP over the bagua backend on one rank should train exactly as the model alone"
