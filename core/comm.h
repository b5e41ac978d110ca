// Communicators: one interface (all-reduce, all-gather, reduce-scatter, broadcast, barrier, split)
// over three backends: a trivial one for a single process, MPI for CPU runs, NCCL for GPUs.
//
// Launch: ranks come from mpirun/srun (Open MPI / PMI variables, then MPI_Init) or torchrun-style
// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The NCCL unique id travels by
// MPI when MPI is up, otherwise by a small TCP handoff from rank 0 at MASTER_ADDR:MASTER_PORT.
// Collectives on GPU tensors use NCCL; on CPU tensors MPI. A collective that does not finish within
// DSA_COMM_TIMEOUT_S seconds (default 600) aborts the communicator and exits with a message, so a
// dead rank never leaves the others hanging.
#pragma once
#include <stdbool.h>
#include "dtype.h"
#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_COMM_SINGLE = 0, DSA_COMM_MPI, DSA_COMM_NCCL } dsa_comm_backend;

typedef struct {
    int rank, size;
    bool has_mpi;     // mpi handle valid (host collectives)
    bool has_nccl;    // nccl handle valid (device collectives)
    void *mpi;        // MPI_Comm (stored by value in a heap cell)
    void *nccl;       // ncclComm_t
} dsa_comm;

typedef struct {
    int world_rank, world_size, local_rank;
    const char *launcher; // "single", "mpirun", "srun", "torchrun"
} dsa_launch_info;

// Reads the launcher's environment (no communication).
dsa_launch_info dsa_launch_detect(void);
// Brings up the world communicator for `dev` (NCCL on CUDA when size > 1; MPI on CPU). On CUDA, also
// selects GPU local_rank. A single process gets a trivial communicator.
dsa_status dsa_comm_init_world(dsa_device dev, dsa_comm *world);
// Sub-communicator of the ranks with the same color, ordered by key (MPI_Comm_split / ncclCommSplit).
dsa_status dsa_comm_split(const dsa_comm *parent, int color, int key, dsa_comm *out);
void dsa_comm_free(dsa_comm *c);
void dsa_comm_finalize(void);
// Stops every rank (MPI_Abort / exit) after printing msg: for errors only one rank sees.
void dsa_comm_abort(const dsa_comm *c, const char *msg) __attribute__((noreturn));

// Raw-buffer collectives: count elements of a float dtype (f32, f64) on `dev`.
dsa_status dsa_all_reduce_sum_raw(const dsa_comm *c, void *buf, int64_t count, dsa_dtype dt, dsa_device dev);
// out holds size * count elements, rank r's block at r * count.
dsa_status dsa_all_gather_raw(const dsa_comm *c, const void *in, void *out, int64_t count, dsa_dtype dt,
                              dsa_device dev);
// in holds size * count elements; out gets the sum of every rank's block `rank`.
dsa_status dsa_reduce_scatter_sum_raw(const dsa_comm *c, const void *in, void *out, int64_t count, dsa_dtype dt,
                                      dsa_device dev);
dsa_status dsa_broadcast_raw(const dsa_comm *c, void *buf, int64_t count, dsa_dtype dt, dsa_device dev, int root);
dsa_status dsa_barrier(const dsa_comm *c);
// Host scalar helpers (for loss averaging, token counts, consistency checks).
dsa_status dsa_all_reduce_sum_f64(const dsa_comm *c, double *vals, int n);
dsa_status dsa_all_reduce_max_i64(const dsa_comm *c, int64_t *vals, int n);

// Tensor forms: in place; all-gather / reduce-scatter along dim 0 (out dim 0 = size * in dim 0).
dsa_status dsa_all_reduce_sum(const dsa_comm *c, dsa_tensor *t);
dsa_status dsa_all_gather(const dsa_comm *c, const dsa_tensor *in, dsa_tensor *out);
dsa_status dsa_reduce_scatter_sum(const dsa_comm *c, const dsa_tensor *in, dsa_tensor *out);

// The tp x cp x dp process grid (TP ranks adjacent): world rank = (dp * cp_size + cp) * tp_size + tp.
typedef struct {
    dsa_comm world, tp, cp, dp;
    int tp_size, cp_size, dp_size;
    int tp_rank, cp_rank, dp_rank;
} dsa_parallel;

// Validates world_size % (tp * cp) == 0 on every rank (same message everywhere), then splits.
dsa_status dsa_parallel_init(dsa_device dev, int tp, int cp, dsa_parallel *p);
// The layout of one process (every communicator of size 1, no MPI/NCCL), even inside a larger job.
void dsa_parallel_single(dsa_parallel *p);
void dsa_parallel_free(dsa_parallel *p);

#ifdef __cplusplus
}
#endif
