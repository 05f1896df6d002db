// Ravnest's cluster planner: which nodes form a pipeline together, and which
// contiguous layers each node of a pipeline holds.
//
// A cluster is an ordered chain of nodes (stages) that together hold the
// whole model and train it as an asynchronous pipeline; clusters train on
// different data and average their parameters now and then. Goals, in
// order (docs/planner.md):
//   1. every cluster can hold the whole model;
//   2. inside a cluster, the slowest stage is as fast as possible (layers
//      split by compute speed, not equally);
//   3. and 4. clusters of similar speed, and many of them: the plan
//      maximizes K / (slowest cluster's time per micro-batch), the samples
//      per second of K clusters that average in step; ties go to the
//      smaller spread between clusters, then to more clusters, then to
//      fewer nodes left out. A node may be left out when every cluster it
//      could join would be slower with it.
// Deterministic for the same input. Torch-free: the profile and the node
// measurements come in as numbers.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace bagua {

struct PlanNode {
  std::string name;
  double memory_bytes = 0;
  double compute = 1.0;         // relative speed: 2.0 runs a layer in half the profiled time
  double bandwidth_mbit = 0;    // its link, both directions
};

struct LayerProfile {
  double param_bytes = 0;
  double activation_bytes_per_sample = 0;  // the layer's output, per sample
  double compute_s_per_sample = 0;         // forward + backward, on the profiling machine
};

struct PlanOptions {
  int micro_batch = 8;  // samples per micro-batch
  // Optimizer state per byte of parameters (SGD with momentum 1, Adam 2).
  double optimizer_state_factor = 2.0;
  // Use at most this many clusters (0: as many as fit).
  int max_clusters = 0;
};

struct StagePlan {
  int node = 0;                     // index into the nodes given
  std::size_t first_layer = 0;      // [first_layer, end_layer)
  std::size_t end_layer = 0;
  double memory_bytes = 0;          // what the stage needs (see stage_memory_bytes)
  double compute_s = 0;             // per micro-batch, forward + backward
  double transfer_s = 0;            // per micro-batch: its activations out and gradients back
  double time_s = 0;                // max(compute, transfer): sends overlap compute
};

struct ClusterPlan {
  std::vector<StagePlan> stages;    // in pipeline order
  // One micro-batch through every stage and link and back, nothing queued.
  double round_trip_s = 0;
  // Its slowest stage, or round_trip_s / stages when longer: at most S
  // micro-batches are in flight in a chain of S stages.
  double time_per_microbatch_s = 0;
};

struct ClusterPlanResult {
  std::vector<ClusterPlan> clusters;
  // Nodes in no cluster: any cluster holding one of them would be slower
  // than the plan without it (a 20 Mbit/s link, say).
  std::vector<int> unused;
  // Whether every stage fits its node's memory (always, for our planner).
  bool fits = true;
  // Micro-batches per second of all clusters when they average in step:
  // K / slowest cluster's time, times the micro-batch.
  double samples_per_s = 0;
  std::string explanation;          // the plan in words
};

// Memory a stage of a cluster of `stages` stages needs for `layers`:
// weights, gradients, optimizer state, and up to `stages` stashed weight
// versions (the version store keeps at most stages + 1 versions), plus the
// activations of up to `stages` micro-batches in flight.
double stage_memory_bytes(const std::vector<LayerProfile>& layers, std::size_t first, std::size_t end, int stages,
                          const PlanOptions& options);

// The best split of `layers` over a fixed chain of nodes (every node gets
// at least one layer): the least time per micro-batch (slowest stage or
// round trip over S) whose stages fit their nodes' memory. Throws
// InvalidArgument when no split fits.
ClusterPlan split_layers(const std::vector<PlanNode>& nodes, const std::vector<int>& chain,
                         const std::vector<LayerProfile>& layers, const PlanOptions& options);

// The plan (goals above). Throws InvalidArgument, naming what is missing and
// by how much, when the model fits nowhere or a node fits no layer.
ClusterPlanResult plan_clusters(const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                                const PlanOptions& options = {});

// Ravnest's own method, as published, for comparison on the same inputs:
// clusters from a genetic algorithm whose fitness looks at memory and
// bandwidth only, and layers split equally inside a cluster. Predicted
// with the same cost model. Seeded: deterministic.
ClusterPlanResult plan_clusters_ravnest(const std::vector<PlanNode>& nodes, const std::vector<LayerProfile>& layers,
                                        const PlanOptions& options = {});

// The predicted time of a given split (equal or not), with the cost model
// of split_layers; stages that do not fit their node are marked in
// memory_bytes but not refused.
ClusterPlan predict_split(const std::vector<PlanNode>& nodes, const std::vector<int>& chain,
                          const std::vector<std::size_t>& stage_ends, const std::vector<LayerProfile>& layers,
                          const PlanOptions& options);

}  // namespace bagua
