// Python bindings: bagua_ravnest._C. The only translation unit that knows
// pybind11; it maps project errors to Python exceptions (RuntimeError
// subclasses with the same message).
#include <fmt/format.h>

#include <cmath>
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/utils/pybind.h>

#include "algorithms/registry.hpp"
#include "backend/c10d_communicator.hpp"
#include "backend/process_group_bagua.hpp"
#include "backend/scalar_type.hpp"
#include "bindings/gil_free_holder.hpp"
#include "codec/codec.hpp"
#include "codec/cuda/cuda_codec.hpp"
#include "collectives/agree.hpp"
#include "collectives/link_probe.hpp"
#include "comm/comm_thread.hpp"
#include "comm/shm_transport.hpp"
#include "comm/tags.hpp"
#include "core/error.hpp"
#include "engine/cuda/cuda_stage.hpp"
#include "engine/engine.hpp"
#include "engine/threaded_stage.hpp"
#include "topology/cluster_plan.hpp"
#include "topology/link_rates.hpp"

namespace py = pybind11;
using namespace bagua;

namespace {

DType dtype_of(const at::Tensor& t) {
  auto d = to_dtype(t.scalar_type());
  if (!d) throw InvalidArgument(fmt::format("dtype {} is not supported for buckets", c10::toString(t.scalar_type())));
  return *d;
}

BucketRole role_of(const std::string& name) {
  for (BucketRole r : {BucketRole::Gradients, BucketRole::Weights, BucketRole::Buffers}) {
    if (name == role_name(r)) return r;
  }
  throw InvalidArgument(fmt::format("bucket role '{}' is not one of gradients, weights, buffers", name));
}

std::chrono::milliseconds to_ms(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds) || seconds > 1e9) {
    throw InvalidArgument(fmt::format("timeout must be a positive, finite number of seconds, got {}", seconds));
  }
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0));
}

// Whether a codec call runs on the GPU: CUDA tensors go to the CUDA kernels
// (of the tensor's device), CPU tensors to the CPU loops, others are refused.
bool on_cuda(const at::Tensor& t, const char* what) {
  if (t.device().is_cpu()) return false;
  if (!t.device().is_cuda()) {
    throw InvalidArgument(fmt::format("{} is on {}; codecs run on CPU or CUDA tensors", what, t.device().str()));
  }
  if (!cuda::built()) {
    throw InvalidArgument(fmt::format("{} is a CUDA tensor but this build has no CUDA codecs (nvcc was not found "
                                      "when bagua_ravnest was built)", what));
  }
  return true;
}

// torch's current stream of the tensor's device, as a cudaStream_t value,
// asked of Python so that the extension needs no CUDA headers of torch's.
std::uintptr_t current_cuda_stream(const at::Tensor& t) {
  auto torch_cuda = py::module_::import("torch").attr("cuda");
  return torch_cuda.attr("current_stream")(t.device().index()).attr("cuda_stream").cast<std::uintptr_t>();
}

std::vector<PlanNode> plan_nodes_from_py(const std::vector<std::map<std::string, py::object>>& nodes) {
  std::vector<PlanNode> ns;
  for (const auto& d : nodes) {
    auto need = [&](const char* key) {
      auto it = d.find(key);
      if (it == d.end()) throw InvalidArgument(fmt::format("a node has no '{}'", key));
      return it->second;
    };
    ns.push_back({py::str(need("name")), need("memory_gb").cast<double>() * 1e9, need("compute").cast<double>(),
                  need("bandwidth_mbit").cast<double>()});
  }
  return ns;
}

std::vector<LayerProfile> layer_profiles_from_py(const std::vector<std::map<std::string, double>>& layers) {
  std::vector<LayerProfile> ls;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto need = [&](const char* key) {
      auto it = layers[i].find(key);
      if (it == layers[i].end()) throw InvalidArgument(fmt::format("layer {} has no '{}'", i, key));
      return it->second;
    };
    ls.push_back({need("param_bytes"), need("activation_bytes_per_sample"), need("compute_s_per_sample")});
  }
  return ls;
}

PlanOptions plan_options(int micro_batch, double optimizer_state_factor) {
  PlanOptions options;
  options.micro_batch = micro_batch;
  options.optimizer_state_factor = optimizer_state_factor;
  return options;
}

py::dict cluster_plan_to_py(const ClusterPlan& c, const std::vector<PlanNode>& nodes) {
  py::list stages;
  for (const auto& st : c.stages) {
    py::dict d;
    d["node"] = nodes[st.node].name;
    d["first_layer"] = st.first_layer;
    d["end_layer"] = st.end_layer;
    d["memory_bytes"] = st.memory_bytes;
    d["compute_s"] = st.compute_s;
    d["transfer_s"] = st.transfer_s;
    d["time_s"] = st.time_s;
    stages.append(d);
  }
  py::dict out;
  out["stages"] = stages;
  out["round_trip_s"] = c.round_trip_s;
  out["time_per_microbatch_s"] = c.time_per_microbatch_s;
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "bagua_ravnest native extension";
  // Registers torch's c10d classes (Backend, Work) that ours derive from.
  py::module_::import("torch.distributed");

  auto base_error = py::register_exception<Error>(m, "BaguaError", PyExc_RuntimeError);
  py::register_exception<InvalidArgument>(m, "InvalidArgument", base_error.ptr());
  py::register_exception<ProtocolError>(m, "ProtocolError", base_error.ptr());
  py::register_exception<TimeoutError>(m, "CommTimeoutError", base_error.ptr());

  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("timeout_s", [](const Communicator& c) { return c.timeout().count() / 1000.0; });

  py::class_<ShmTransport, std::shared_ptr<ShmTransport>>(m, "ShmTransport",
                                                          "Shared-memory channels to the ranks of this host; "
                                                          "set up by bagua_ravnest.backend (three phases).")
      .def(py::init([](const std::string& session, int rank, std::vector<int> peers, std::size_t capacity,
                       double timeout_s) {
             return std::make_shared<ShmTransport>(session, rank, std::move(peers), capacity, to_ms(timeout_s));
           }),
           py::arg("session"), py::arg("rank"), py::arg("peers"), py::arg("capacity"), py::arg("timeout_s"))
      .def("connect", &ShmTransport::connect, py::arg("peer_pids"))
      .def("unlink_names", &ShmTransport::unlink_names)
      .def_property_readonly("peers", &ShmTransport::peers);

  py::class_<ProcessGroupBagua, c10d::Backend, GilFreeHolder<ProcessGroupBagua>>(m, "ProcessGroupBagua")
      .def(py::init([](int rank, int size, const c10::intrusive_ptr<c10d::Backend>& cpu_inner,
                       const c10::intrusive_ptr<c10d::Backend>& cuda_inner, const std::string& allreduce,
                       std::size_t ring_chunk_bytes, double timeout_s, std::shared_ptr<ShmTransport> shm, int rings,
                       const std::string& link_mbit, bool both_directions, int ranks_on_host) {
             BackendOptions opts;
             if (allreduce == "ring") {
               opts.allreduce = BackendAllreduce::Ring;
             } else if (allreduce == "multi_ring") {
               opts.allreduce = BackendAllreduce::MultiRing;
             } else if (allreduce == "inner") {
               opts.allreduce = BackendAllreduce::Inner;
             } else {
               throw InvalidArgument(fmt::format("bagua backend: allreduce '{}' is not ring, multi_ring or inner", allreduce));
             }
             if (ring_chunk_bytes == 0) throw InvalidArgument("ring_chunk_bytes must be positive");
             opts.ring.chunk_bytes = ring_chunk_bytes;
             opts.multi_ring.rings = rings;
             opts.multi_ring.both_directions = both_directions;
             if (rings < 0) throw InvalidArgument("rings must be 0 (auto) or positive");
             opts.ranks_on_host = ranks_on_host;
             if (!link_mbit.empty()) opts.link_mbit = parse_link_mbit(link_mbit, size);
             opts.timeout = to_ms(timeout_s);
             return GilFreeHolder<ProcessGroupBagua>(
                 c10::make_intrusive<ProcessGroupBagua>(rank, size, cpu_inner, cuda_inner, opts, std::move(shm)));
           }),
           py::arg("rank"), py::arg("size"), py::arg("cpu_inner"), py::arg("cuda_inner"), py::arg("allreduce"),
           py::arg("ring_chunk_bytes"), py::arg("timeout_s"), py::arg("shm") = nullptr, py::arg("rings") = 2,
           py::arg("link_mbit") = "", py::arg("both_directions") = false, py::arg("ranks_on_host") = 1)
      .def(
          "communicator",
          [](const ProcessGroupBagua& pg, double timeout_s) { return pg.communicator(to_ms(timeout_s)); },
          py::arg("timeout_s"),
          "A communicator over this group's transports whose waits use timeout_s (for a DDP engine).")
      .def_property_readonly("shared_memory_peers", &ProcessGroupBagua::shared_memory_peers)
      .def_property_readonly("shared_memory_tracked_tags", &ProcessGroupBagua::shared_memory_tracked_tags,
                             "Tags with receives or messages in flight on shared memory (0 when idle).")
      .def("compressed_allreduce", &ProcessGroupBagua::compressed_allreduce, py::arg("tensor"), py::arg("codec"),
           "Average of a float32 CPU tensor through a compressed all-reduce with `codec`; returns a Work.")
      .def_property_readonly("allreduce",
                             [](const ProcessGroupBagua& pg) {
                               switch (pg.options().allreduce) {
                                 case BackendAllreduce::Ring: return "ring";
                                 case BackendAllreduce::MultiRing: return "multi_ring";
                                 case BackendAllreduce::Inner: break;
                               }
                               return "inner";
                             })
      .def_property_readonly(
          "multi_ring_plan",
          [](const ProcessGroupBagua& pg) -> std::optional<std::string> {
            if (!pg.multi_ring_plan()) return std::nullopt;
            return pg.multi_ring_plan()->describe();
          },
          "The multi-ring plan in words (None unless allreduce is multi_ring).")
      .def_property_readonly(
          "link_mbit",
          [](const ProcessGroupBagua& pg) {
            return pg.multi_ring_plan() ? pg.multi_ring_plan()->link_mbit() : std::vector<double>{};
          },
          "The link rates (Mbit/s, by rank) the multi-ring plan was made from, given or measured; [] otherwise.");

  py::class_<Codec, std::shared_ptr<Codec>>(m, "Codec", "A wire codec (csrc/codec): encode values, decode bytes.")
      .def(py::init([](const std::string& name, std::size_t block_elems) {
             // Codecs are immutable; the holder is non-const only because pybind11 wants it so.
             return std::const_pointer_cast<Codec>(make_codec(name, block_elems));
           }),
           py::arg("name"), py::arg("block_elems") = 0)
      .def_property_readonly("name", &Codec::name)
      .def_property_readonly("lossless", &Codec::lossless)
      .def("wire_bytes", &Codec::wire_bytes, py::arg("count"))
      .def(
          "encode",
          [](const Codec& c, const at::Tensor& t, std::optional<at::Tensor> out) {
            const bool gpu = on_cuda(t, "encode: values");
            if (!t.is_contiguous()) throw InvalidArgument("encode needs a contiguous tensor");
            const auto dtype = to_dtype(t.scalar_type());
            if (!dtype) throw InvalidArgument("encode takes float32, float16 or bfloat16 values");
            const auto n = static_cast<std::size_t>(t.numel());
            at::Tensor wire = out ? *out : at::empty({static_cast<int64_t>(c.wire_bytes(n))}, t.options().dtype(at::kByte));
            if (wire.scalar_type() != at::kByte || !wire.is_contiguous() || wire.device() != t.device() ||
                static_cast<std::size_t>(wire.numel()) != c.wire_bytes(n)) {
              throw InvalidArgument(fmt::format(
                  "encode: out must be a contiguous uint8 tensor of {} bytes on the values' device", c.wire_bytes(n)));
            }
            const std::uintptr_t stream = gpu ? current_cuda_stream(t) : 0;
            py::gil_scoped_release release;
            if (gpu) {
              cuda::encode(c, t.data_ptr(), n, *dtype, wire.data_ptr<std::uint8_t>(), stream, t.device().index());
            } else {
              c.encode(t.data_ptr(), n, *dtype, wire.data_ptr<std::uint8_t>());
            }
            return wire;
          },
          py::arg("values"), py::arg("out") = py::none(),
          "Wire bytes (uint8 tensor, on the values' device) of a float32/float16/bfloat16 tensor, CPU or CUDA "
          "(the CUDA kernels write the CPU's bytes, on torch's current stream).")
      .def(
          "decode",
          [](const Codec& c, const at::Tensor& wire, std::size_t count, std::optional<at::Tensor> out) {
            const bool gpu = on_cuda(wire, "decode: wire");
            if (wire.scalar_type() != at::kByte || !wire.is_contiguous()) {
              throw InvalidArgument("decode needs a contiguous uint8 tensor");
            }
            at::Tensor values =
                out ? *out : at::empty({static_cast<int64_t>(count)}, wire.options().dtype(at::kFloat));
            if (values.scalar_type() != at::kFloat || !values.is_contiguous() || values.device() != wire.device() ||
                static_cast<std::size_t>(values.numel()) != count) {
              throw InvalidArgument(fmt::format(
                  "decode: out must be a contiguous float32 tensor of {} values on the wire's device", count));
            }
            const std::uintptr_t stream = gpu ? current_cuda_stream(wire) : 0;
            py::gil_scoped_release release;
            if (gpu) {
              cuda::decode(c, wire.data_ptr<std::uint8_t>(), static_cast<std::size_t>(wire.numel()), count,
                           values.data_ptr<float>(), false, stream, wire.device().index());
            } else {
              c.decode(wire.data_ptr<std::uint8_t>(), static_cast<std::size_t>(wire.numel()), count,
                       values.data_ptr<float>(), false);
            }
            return values;
          },
          py::arg("wire"), py::arg("count"), py::arg("out") = py::none(),
          "float32 values (on the wire's device, CPU or CUDA) from wire bytes; malformed bytes raise ProtocolError.");
  m.def(
      "settle_threads",
      [](double seconds) {
        return CommThread::settle_all(std::chrono::milliseconds(static_cast<long>(seconds * 1000)));
      },
      py::arg("seconds"), py::call_guard<py::gil_scoped_release>(),
      "Waits (at most `seconds`) until every communication thread has destroyed the jobs submitted so far; "
      "called at interpreter exit.");
  m.def("cuda_codecs_built", &cuda::built, "Whether this build has the CUDA codec kernels (nvcc was found).");
  m.def("codec_names", [] { return codec_names(); });

  m.def("algorithm_names", [] { return AlgorithmRegistry::instance().names(); });
  m.def(
      "plan_clusters",
      [](const std::vector<std::map<std::string, py::object>>& nodes, const std::vector<std::map<std::string, double>>& layers,
         int micro_batch, double optimizer_state_factor, int max_clusters, const std::string& method) {
        const std::vector<PlanNode> ns = plan_nodes_from_py(nodes);
        PlanOptions options = plan_options(micro_batch, optimizer_state_factor);
        options.max_clusters = max_clusters;
        if (method != "bagua" && method != "ravnest") {
          throw InvalidArgument(fmt::format("plan method '{}' is not bagua or ravnest", method));
        }
        const std::vector<LayerProfile> ls = layer_profiles_from_py(layers);
        const ClusterPlanResult r = method == "bagua" ? plan_clusters(ns, ls, options) : plan_clusters_ravnest(ns, ls, options);
        py::list clusters;
        for (const auto& c : r.clusters) clusters.append(cluster_plan_to_py(c, ns));
        py::list unused;
        for (int u : r.unused) unused.append(ns[u].name);
        py::dict out;
        out["method"] = method;
        out["clusters"] = clusters;
        out["unused"] = unused;
        out["fits"] = r.fits;
        out["samples_per_s"] = r.samples_per_s;
        out["explanation"] = r.explanation;
        return out;
      },
      py::arg("nodes"), py::arg("layers"), py::arg("micro_batch"), py::arg("optimizer_state_factor"),
      py::arg("max_clusters") = 0, py::arg("method") = "bagua",
      "Ravnest's cluster planner (topology/cluster_plan.hpp): nodes as dicts with name, memory_gb, compute, "
      "bandwidth_mbit; layers with param_bytes, activation_bytes_per_sample, compute_s_per_sample.");
  m.def(
      "split_layers",
      [](const std::vector<std::map<std::string, py::object>>& nodes, const std::vector<std::map<std::string, double>>& layers,
         int micro_batch, double optimizer_state_factor) {
        const std::vector<PlanNode> ns = plan_nodes_from_py(nodes);
        std::vector<int> chain(ns.size());
        for (std::size_t i = 0; i < chain.size(); ++i) chain[i] = static_cast<int>(i);
        return cluster_plan_to_py(
            split_layers(ns, chain, layer_profiles_from_py(layers), plan_options(micro_batch, optimizer_state_factor)), ns);
      },
      py::arg("nodes"), py::arg("layers"), py::arg("micro_batch"), py::arg("optimizer_state_factor"),
      "The planner's split of the layers over one chain of nodes, in the order given (every node gets a stage).");
  m.def("parse_link_mbit", [](const std::string& text, int size) { return parse_link_mbit(text, size); },
        py::arg("text"), py::arg("size"), "BAGUA_LINK_MBIT's form: one positive rate (Mbit/s) per rank.");
  m.def("algorithm_info", [](const std::string& name) {
    const auto& e = AlgorithmRegistry::instance().entry(name);
    return py::make_tuple(e.summary, e.options, e.optimizer, e.needs_optimizer);
  });
  m.def("parse_algorithm_spec", &parse_algorithm_spec, py::arg("spec"),
        "(name, options) of a spec; a composed spec has the name ''.");
  m.def("split_algorithm_specs", &split_algorithm_specs, py::arg("text"),
        "A comma-separated list of specs, split where one spec ends and the next begins.");
  m.def(
      "canonical_spec",
      [](const std::string& spec, int rank, int size, std::vector<long long> host_keys) {
        return AlgorithmRegistry::instance().create(spec, WorldInfo{rank, size, std::move(host_keys)})->spec();
      },
      py::arg("spec"), py::arg("rank"), py::arg("size"), py::arg("host_keys"),
      "Builds the algorithm to validate `spec`; returns its canonical form.");


  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def(py::init([](std::shared_ptr<Communicator> comm, const std::string& spec, std::vector<long long> host_keys,
                       double timeout_s, int lanes, std::vector<double> link_mbit) {
             WorldInfo world{comm->rank(), comm->size(), std::move(host_keys)};
             // Given rates (BAGUA_LINK_MBIT, or the ones the process group
             // measured) or, only if the algorithm asks, a probe now.
             world.link_mbit = [comm, link_mbit = std::move(link_mbit)] {
               std::vector<double> rates = link_mbit;
               if (rates.empty() && comm->size() > 1) rates = probe_link_mbit(*comm, tags::kSetup);
               check_same_link_mbit(*comm, rates);
               return rates;
             };
             world.min_over_ranks = [comm](int value) { return min_over_ranks(*comm, value); };
             auto algo = AlgorithmRegistry::instance().create(spec, world);
             return std::make_shared<Engine>(std::move(comm), std::shared_ptr<Algorithm>(std::move(algo)),
                                             to_ms(timeout_s), lanes);
           }),
           py::arg("communicator"), py::arg("spec"), py::arg("host_keys"), py::arg("timeout_s"), py::arg("lanes") = 2,
           py::arg("link_mbit") = std::vector<double>{})
      .def_property_readonly("spec", &Engine::spec)
      .def_property_readonly("plan_description", &Engine::plan_description,
                             "The algorithm's start-up plan in words ('' when it has none).")
      .def_property("step", &Engine::step, &Engine::set_step)
      .def("bucket_roles",
           [](const Engine& e) {
             std::vector<std::string> out;
             for (BucketRole r : e.bucket_roles()) out.push_back(role_name(r));
             return out;
           })
      .def(
          "plan",
          [](Engine& e, const std::string& role, const std::vector<at::Tensor>& tensors, double cap_mb,
             double first_cap_mb) {
            std::vector<TensorInfo> infos;
            for (const auto& t : tensors) infos.push_back({static_cast<std::size_t>(t.numel()), dtype_of(t)});
            if (!(cap_mb > 0) || !(first_cap_mb > 0)) throw InvalidArgument("bucket_cap_mb must be positive");
            return e.plan(role_of(role), infos,
                          {static_cast<std::size_t>(cap_mb * (1 << 20)), static_cast<std::size_t>(first_cap_mb * (1 << 20))});
          },
          py::arg("role"), py::arg("tensors"), py::arg("cap_mb"), py::arg("first_cap_mb"),
          "The algorithm's buckets of `role` (tensor indices per bucket), or DDP's rule.")
      .def(
          "set_buckets",
          [](Engine& e, const std::string& role, const std::vector<std::pair<at::Tensor, std::vector<std::size_t>>>& buckets,
             std::size_t num_tensors, const std::vector<at::Tensor>& companions, const std::vector<at::Tensor>& devices) {
            if (!companions.empty() && companions.size() != buckets.size()) {
              throw InvalidArgument("set_buckets: give one companion per bucket, or none");
            }
            if (!devices.empty() && devices.size() != buckets.size()) {
              throw InvalidArgument("set_buckets: give one device buffer per bucket, or none");
            }
            std::vector<BucketSpec> specs;
            for (std::size_t b = 0; b < buckets.size(); ++b) {
              const auto& [t, members] = buckets[b];
              if (!t.is_contiguous() || !t.device().is_cpu()) {
                throw InvalidArgument("bucket buffers must be contiguous CPU tensors");
              }
              // The job holds its own reference to the bucket tensor's storage (and its companion's).
              std::vector<at::Tensor> held{t};
              float* companion = nullptr;
              if (!companions.empty()) {
                const at::Tensor& c = companions[b];
                if (!c.is_contiguous() || !c.device().is_cpu() || c.scalar_type() != at::kFloat ||
                    c.numel() != t.numel()) {
                  throw InvalidArgument("a bucket's companion must be a contiguous CPU fp32 tensor of its size");
                }
                companion = c.data_ptr<float>();
                held.push_back(c);
              }
              void* device = nullptr;
              if (!devices.empty()) {
                // The bucket's tensors live here; `t` is its host staging buffer.
                const at::Tensor& d = devices[b];
                if (!d.is_contiguous() || d.scalar_type() != t.scalar_type() || d.numel() != t.numel()) {
                  throw InvalidArgument("a bucket's device buffer must be contiguous, of its host buffer's dtype and size");
                }
                device = d.data_ptr();
                held.push_back(d);
              }
              BucketSpec spec{t.data_ptr(), static_cast<std::size_t>(t.numel()), dtype_of(t), members,
                              std::make_shared<std::vector<at::Tensor>>(std::move(held))};
              spec.companion = companion;
              spec.device = device;
              specs.push_back(std::move(spec));
            }
            // It may wait for copies in flight, whose end can drop tensors.
            py::gil_scoped_release release;
            e.set_buckets(role_of(role), std::move(specs), num_tensors);
          },
          py::arg("role"), py::arg("buckets"), py::arg("num_tensors"), py::arg("companions") = std::vector<at::Tensor>{},
          py::arg("devices") = std::vector<at::Tensor>{})
      .def_property_readonly("fills_companions", &Engine::fills_companions,
                             "Whether the algorithm fills a companion beside each gradient bucket for its optimizer.")
      .def("start", &Engine::start, py::call_guard<py::gil_scoped_release>())
      .def("stop", &Engine::stop, py::call_guard<py::gil_scoped_release>())
      .def("need_reset", &Engine::need_reset)
      .def("drain", &Engine::drain, py::call_guard<py::gil_scoped_release>())
      .def("control", &Engine::control, py::arg("name"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("controls", &Engine::controls)
      .def_property_readonly("depends_on_step", &Engine::depends_on_step)
      .def_property_readonly("moves_weights_in_background", &Engine::moves_weights_in_background)
      .def(
          "hold_weights",
          [](Engine& e, bool replace) { e.hold_weights(replace ? WeightsHold::Replace : WeightsHold::Read); },
          py::arg("replace"), py::call_guard<py::gil_scoped_release>())
      .def("release_weights", &Engine::release_weights)
      .def("before_averaging_replicas", &Engine::before_averaging_replicas,
           py::call_guard<py::gil_scoped_release>())
      .def("replicas_averaged", &Engine::replicas_averaged, py::call_guard<py::gil_scoped_release>())
      .def("mark_ready", &Engine::mark_ready, py::arg("index"), py::arg("producer") = 0,
           "Tensor `index` has its gradient; `producer`: the device queue (a cudaStream_t as an int) that wrote it.")
      .def("unready_tensors", &Engine::unready_tensors)
      .def("wait_all", &Engine::wait_all, py::arg("consumer") = 0, py::call_guard<py::gil_scoped_release>(),
           "End of backward; the device queue `consumer` (a cudaStream_t as an int) is ordered after every copy back.")
      .def(
          "set_stage",
          [](Engine& e, const std::string& kind, int device, double delay_out_ms, double delay_in_ms) {
            if (kind == "cuda") {
              e.set_stage(cuda::make_stage(device));
            } else if (kind == "threaded") {
              using us = std::chrono::microseconds;
              e.set_stage(std::make_shared<ThreadedStage>(ThreadedStage::Delays{
                  us(static_cast<long long>(delay_out_ms * 1000)), us(static_cast<long long>(delay_in_ms * 1000))}));
            } else {
              throw InvalidArgument(fmt::format("unknown stage '{}': 'cuda' or 'threaded'", kind));
            }
          },
          py::arg("kind"), py::arg("device") = 0, py::arg("delay_out_ms") = 0.0, py::arg("delay_in_ms") = 0.0,
          "How buckets with a device buffer reach host memory: 'cuda' (a copy stream of device `device`) or "
          "'threaded' (host copies on a thread of their own, delayed as given: the CPU suite's stand-in).")
      .def_property_readonly("staged", &Engine::staged)
      .def("forward_pre_hook", &Engine::forward_pre_hook, py::call_guard<py::gil_scoped_release>())
      .def("post_optimizer_step_hook", &Engine::post_optimizer_step_hook, py::call_guard<py::gil_scoped_release>())
      .def("state_dict",
           [](Engine& e) {
             py::dict out;
             for (const auto& [k, v] : e.state_dict()) {
               out[py::str(k)] = py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
             }
             return out;
           })
      .def("load_state_dict", [](Engine& e, const std::map<std::string, std::string>& state) {
        AlgorithmState s;
        for (const auto& [k, v] : state) s[k] = std::vector<std::uint8_t>(v.begin(), v.end());
        e.load_state_dict(s);
      });
}
