#include "comm.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "device.h"
#include "log.h"

#ifdef DSA_HAVE_MPI
#include <mpi.h>
#endif
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#include "cuda_check.h"
#endif

static const char *env(const char *name) {
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

dsa_launch_info dsa_launch_detect(void) {
    dsa_launch_info li = {0, 1, 0, "single"};
    if (env("OMPI_COMM_WORLD_SIZE")) {
        li.world_rank = dsa_env_int("OMPI_COMM_WORLD_RANK", 0);
        li.world_size = dsa_env_int("OMPI_COMM_WORLD_SIZE", 1);
        li.local_rank = dsa_env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
        li.launcher = "mpirun";
    } else if (env("PMI_SIZE") && env("PMI_RANK")) {
        li.world_rank = dsa_env_int("PMI_RANK", 0);
        li.world_size = dsa_env_int("PMI_SIZE", 1);
        li.local_rank = dsa_env_int("MPI_LOCALRANKID", dsa_env_int("SLURM_LOCALID", 0));
        li.launcher = "mpirun";
    } else if (env("RANK") && env("WORLD_SIZE")) {
        li.world_rank = dsa_env_int("RANK", 0);
        li.world_size = dsa_env_int("WORLD_SIZE", 1);
        li.local_rank = dsa_env_int("LOCAL_RANK", 0);
        li.launcher = "torchrun";
    } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
        li.world_rank = dsa_env_int("SLURM_PROCID", 0);
        li.world_size = dsa_env_int("SLURM_NTASKS", 1);
        li.local_rank = dsa_env_int("SLURM_LOCALID", 0);
        li.launcher = "srun";
    }
    return li;
}

// ---- MPI bring-up ------------------------------------------------------------------------------
#ifdef DSA_HAVE_MPI
static bool g_mpi_started = false;

static dsa_status mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return DSA_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return dsa_error_set(DSA_ERR_COMM, "%s failed: %s", what, msg);
}
#define MPI_TRY(call) DSA_TRY(mpi_check((call), #call))

static MPI_Comm mpi_of(const dsa_comm *c) { return *(MPI_Comm *)c->mpi; }

static dsa_status wrap_mpi(MPI_Comm m, dsa_comm *c) {
    MPI_Comm *cell = malloc(sizeof *cell);
    if (!cell) return dsa_error_set(DSA_ERR_MEMORY, "comm: no memory");
    *cell = m;
    c->mpi = cell;
    c->has_mpi = true;
    MPI_TRY(MPI_Comm_rank(m, &c->rank));
    MPI_TRY(MPI_Comm_size(m, &c->size));
    return DSA_OK;
}

static MPI_Datatype mpi_type(dsa_dtype dt) { return dt == DSA_F64 ? MPI_DOUBLE : MPI_FLOAT; }
#endif

// ---- TCP handoff of a small blob (the NCCL unique id) from rank 0 ---------------------------------
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
static int tcp_connect_retry(const char *host, const char *port, int seconds) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (int attempt = 0; attempt < seconds * 10; attempt++) {
        if (getaddrinfo(host, port, &hints, &res) == 0) {
            for (struct addrinfo *a = res; a; a = a->ai_next) {
                int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
                if (fd < 0) continue;
                if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                    freeaddrinfo(res);
                    return fd;
                }
                close(fd);
            }
            freeaddrinfo(res);
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static dsa_status tcp_share_blob(int rank, int size, void *blob, size_t n) {
    const char *host = env("MASTER_ADDR"), *port = env("MASTER_PORT");
    if (!host || !port)
        return dsa_error_set(DSA_ERR_COMM, "multi-process launch without MPI needs MASTER_ADDR and MASTER_PORT");
    if (rank == 0) {
        int srv = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in addr = {0};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_ANY);
        addr.sin_port = htons((uint16_t)atoi(port));
        if (srv < 0 || bind(srv, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(srv, size) != 0) {
            int e = errno;
            if (srv >= 0) close(srv);
            return dsa_error_set(DSA_ERR_COMM, "rank 0 cannot listen on port %s: %s", port, strerror(e));
        }
        for (int i = 1; i < size; i++) {
            int fd = accept(srv, NULL, NULL);
            if (fd < 0 || write(fd, blob, n) != (ssize_t)n) {
                close(srv);
                return dsa_error_set(DSA_ERR_COMM, "rank 0: handing the NCCL id to rank %d failed", i);
            }
            close(fd);
        }
        close(srv);
        return DSA_OK;
    }
    int fd = tcp_connect_retry(host, port, dsa_env_int("DSA_COMM_CONNECT_S", 120));
    if (fd < 0)
        return dsa_error_set(DSA_ERR_COMM, "rank %d cannot reach rank 0 at %s:%s (MASTER_ADDR/MASTER_PORT)", rank,
                             host, port);
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)blob + got, n - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (got != n) return dsa_error_set(DSA_ERR_COMM, "rank %d: short read of the NCCL id from rank 0", rank);
    return DSA_OK;
}

// ---- NCCL helpers -----------------------------------------------------------------------------------
#define NCCL_TRY(call)                                                                                       \
    do {                                                                                                     \
        ncclResult_t r_ = (call);                                                                            \
        if (r_ != ncclSuccess && r_ != ncclInProgress)                                                       \
            return dsa_error_set(DSA_ERR_COMM, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,          \
                                 ncclGetErrorString(r_));                                                    \
    } while (0)

// A collective that fails leaves the communicator unusable and the peers gone or stuck: stop this
// rank, loudly, instead of letting the caller carry on into the next collective.
static void nccl_fatal(const dsa_comm *c, const char *what, const char *why) {
    fprintf(stderr, "dsa: %s on rank %d: %s; stopping\n", what, c->rank, why);
    fflush(stderr);
    ncclCommAbort((ncclComm_t)c->nccl);
    exit(1);
}

#define NCCL_COLL(c, what, call)                                                   \
    do {                                                                           \
        ncclResult_t r_ = (call);                                                  \
        if (r_ != ncclSuccess && r_ != ncclInProgress) nccl_fatal((c), (what), ncclGetErrorString(r_)); \
    } while (0)

static ncclDataType_t nccl_type(dsa_dtype dt) { return dt == DSA_F64 ? ncclFloat64 : ncclFloat32; }

// Waits for the stream while watching NCCL's asynchronous error and a deadline; on either, aborts the
// communicator so this rank does not hang, and reports.
static dsa_status nccl_wait(const dsa_comm *c, const char *what) {
    cudaStream_t st = (cudaStream_t)dsa_cuda()->stream;
    double timeout = dsa_env_int("DSA_COMM_TIMEOUT_S", 600);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cudaError_t q = cudaStreamQuery(st);
        if (q == cudaSuccess) return DSA_OK;
        if (q != cudaErrorNotReady) CUDA_TRY(q);
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError((ncclComm_t)c->nccl, &async);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double dt = (now.tv_sec - t0.tv_sec) + 1e-9 * (now.tv_nsec - t0.tv_nsec);
        if ((async != ncclSuccess && async != ncclInProgress) || dt > timeout)
            nccl_fatal(c, what, dt > timeout ? "timed out (a peer rank died or hangs; see DSA_COMM_TIMEOUT_S)"
                                             : ncclGetErrorString(async));
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}
#endif

// ---- world ------------------------------------------------------------------------------------------
dsa_status dsa_comm_init_world(dsa_device dev, dsa_comm *w) {
    memset(w, 0, sizeof *w);
    dsa_launch_info li = dsa_launch_detect();
    w->rank = li.world_rank;
    w->size = li.world_size;
    if (li.world_size == 1) {
        if (dev == DSA_CUDA && !dsa_cuda()) DSA_TRY(dsa_cuda_init(0));
        return DSA_OK;
    }
    bool mpi_launch = !strcmp(li.launcher, "mpirun") || (!strcmp(li.launcher, "srun") && !env("MASTER_ADDR"));
#ifdef DSA_HAVE_MPI
    if (mpi_launch) {
        if (!g_mpi_started) {
            int inited = 0;
            MPI_Initialized(&inited);
            if (!inited) MPI_TRY(MPI_Init(NULL, NULL));
            g_mpi_started = true;
            MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        }
        DSA_TRY(wrap_mpi(MPI_COMM_WORLD, w));
    }
#else
    if (mpi_launch)
        return dsa_error_set(DSA_ERR_COMM, "launched by %s with %d ranks but this build has no MPI", li.launcher,
                             li.world_size);
#endif
    dsa_log_set_rank(w->rank, w->size);
    if (dev == DSA_CPU) {
        if (!w->has_mpi)
            return dsa_error_set(DSA_ERR_COMM, "CPU runs with %d ranks need MPI (launch with mpirun)", w->size);
        return DSA_OK;
    }
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    int ngpu = dsa_cuda_device_count(NULL);
    if (ngpu == 0) return dsa_error_set(DSA_ERR_DEVICE, "rank %d: no GPU visible", w->rank);
    DSA_TRY(dsa_cuda_init(li.local_rank % ngpu));
    ncclUniqueId id;
    if (w->rank == 0) NCCL_TRY(ncclGetUniqueId(&id));
#ifdef DSA_HAVE_MPI
    if (w->has_mpi) MPI_TRY(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi_of(w)));
    else
#endif
        DSA_TRY(tcp_share_blob(w->rank, w->size, &id, sizeof id));
    ncclComm_t nc;
    NCCL_TRY(ncclCommInitRank(&nc, w->size, id, w->rank));
    w->nccl = nc;
    w->has_nccl = true;
    return DSA_OK;
#else
    return dsa_error_set(DSA_ERR_COMM, "GPU runs with %d ranks need NCCL, which this build lacks", w->size);
#endif
}

dsa_status dsa_comm_split(const dsa_comm *p, int color, int key, dsa_comm *out) {
    memset(out, 0, sizeof *out);
    if (p->size == 1) {
        out->size = 1;
        return DSA_OK;
    }
#ifdef DSA_HAVE_MPI
    if (p->has_mpi) {
        MPI_Comm m;
        MPI_TRY(MPI_Comm_split(mpi_of(p), color, key, &m));
        MPI_Comm_set_errhandler(m, MPI_ERRORS_RETURN);
        DSA_TRY(wrap_mpi(m, out));
    }
#endif
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (p->has_nccl) {
        ncclComm_t nc;
        NCCL_TRY(ncclCommSplit((ncclComm_t)p->nccl, color, key, &nc, NULL));
        out->nccl = nc;
        out->has_nccl = true;
        int r, n;
        NCCL_TRY(ncclCommUserRank(nc, &r));
        NCCL_TRY(ncclCommCount(nc, &n));
        out->rank = r;
        out->size = n;
    }
#endif
    if (!out->has_mpi && !out->has_nccl) return dsa_error_set(DSA_ERR_COMM, "comm split: parent has no backend");
    return DSA_OK;
}

void dsa_comm_free(dsa_comm *c) {
#ifdef DSA_HAVE_MPI
    if (c->has_mpi && mpi_of(c) != MPI_COMM_WORLD) {
        MPI_Comm m = mpi_of(c);
        MPI_Comm_free(&m);
    }
#endif
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (c->has_nccl) ncclCommDestroy((ncclComm_t)c->nccl);
#endif
    free(c->mpi);
    memset(c, 0, sizeof *c);
}

void dsa_comm_finalize(void) {
#ifdef DSA_HAVE_MPI
    if (g_mpi_started) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
        g_mpi_started = false;
    }
#endif
}

void dsa_comm_abort(const dsa_comm *c, const char *msg) {
    fprintf(stderr, "dsa: rank %d stopping all ranks: %s\n", c ? c->rank : 0, msg);
    fflush(stderr);
#ifdef DSA_HAVE_MPI
    if (c && c->has_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (c && c->has_nccl) ncclCommAbort((ncclComm_t)c->nccl);
#endif
    exit(1);
}

// ---- collectives ------------------------------------------------------------------------------------
static dsa_status check_float(const char *op, dsa_dtype dt) {
    if (dt != DSA_F32 && dt != DSA_F64)
        return dsa_error_set(DSA_ERR_DTYPE, "%s: only f32/f64 buffers, got %s", op, dsa_dtype_name(dt));
    return DSA_OK;
}

dsa_status dsa_all_reduce_sum_raw(const dsa_comm *c, void *buf, int64_t count, dsa_dtype dt, dsa_device dev) {
    DSA_TRY(check_float("all_reduce", dt));
    if (c->size == 1 || count == 0) return DSA_OK;
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (dev == DSA_CUDA && c->has_nccl) {
        NCCL_COLL(c, "all_reduce", ncclAllReduce(buf, buf, (size_t)count, nccl_type(dt), ncclSum, (ncclComm_t)c->nccl,
                               (cudaStream_t)dsa_cuda()->stream));
        return nccl_wait(c, "all_reduce");
    }
#endif
#ifdef DSA_HAVE_MPI
    if (dev == DSA_CPU && c->has_mpi) {
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, mpi_type(dt), MPI_SUM, mpi_of(c)));
        return DSA_OK;
    }
#endif
    return dsa_error_set(DSA_ERR_COMM, "all_reduce: no backend for %s buffers", dsa_device_name(dev));
}

dsa_status dsa_all_gather_raw(const dsa_comm *c, const void *in, void *out, int64_t count, dsa_dtype dt,
                              dsa_device dev) {
    DSA_TRY(check_float("all_gather", dt));
    if (c->size == 1) return dsa_memcpy(dev, out, dev, in, (size_t)count * dsa_dtype_size(dt));
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (dev == DSA_CUDA && c->has_nccl) {
        NCCL_COLL(c, "all_gather", ncclAllGather(in, out, (size_t)count, nccl_type(dt), (ncclComm_t)c->nccl,
                               (cudaStream_t)dsa_cuda()->stream));
        return nccl_wait(c, "all_gather");
    }
#endif
#ifdef DSA_HAVE_MPI
    if (dev == DSA_CPU && c->has_mpi) {
        MPI_TRY(MPI_Allgather(in, (int)count, mpi_type(dt), out, (int)count, mpi_type(dt), mpi_of(c)));
        return DSA_OK;
    }
#endif
    return dsa_error_set(DSA_ERR_COMM, "all_gather: no backend for %s buffers", dsa_device_name(dev));
}

dsa_status dsa_reduce_scatter_sum_raw(const dsa_comm *c, const void *in, void *out, int64_t count, dsa_dtype dt,
                                      dsa_device dev) {
    DSA_TRY(check_float("reduce_scatter", dt));
    if (c->size == 1) return dsa_memcpy(dev, out, dev, in, (size_t)count * dsa_dtype_size(dt));
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (dev == DSA_CUDA && c->has_nccl) {
        NCCL_COLL(c, "reduce_scatter", ncclReduceScatter(in, out, (size_t)count, nccl_type(dt), ncclSum, (ncclComm_t)c->nccl,
                                   (cudaStream_t)dsa_cuda()->stream));
        return nccl_wait(c, "reduce_scatter");
    }
#endif
#ifdef DSA_HAVE_MPI
    if (dev == DSA_CPU && c->has_mpi) {
        MPI_TRY(MPI_Reduce_scatter_block(in, out, (int)count, mpi_type(dt), MPI_SUM, mpi_of(c)));
        return DSA_OK;
    }
#endif
    return dsa_error_set(DSA_ERR_COMM, "reduce_scatter: no backend for %s buffers", dsa_device_name(dev));
}

dsa_status dsa_broadcast_raw(const dsa_comm *c, void *buf, int64_t count, dsa_dtype dt, dsa_device dev, int root) {
    if (c->size == 1) return DSA_OK;
    size_t bytes = (size_t)count * dsa_dtype_size(dt);
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (dev == DSA_CUDA && c->has_nccl) {
        NCCL_COLL(c, "broadcast", ncclBroadcast(buf, buf, bytes, ncclUint8, root, (ncclComm_t)c->nccl,
                               (cudaStream_t)dsa_cuda()->stream));
        return nccl_wait(c, "broadcast");
    }
#endif
#ifdef DSA_HAVE_MPI
    if (dev == DSA_CPU && c->has_mpi) {
        MPI_TRY(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, mpi_of(c)));
        return DSA_OK;
    }
#endif
    return dsa_error_set(DSA_ERR_COMM, "broadcast: no backend for %s buffers", dsa_device_name(dev));
}

dsa_status dsa_barrier(const dsa_comm *c) {
    if (c->size == 1) return DSA_OK;
#ifdef DSA_HAVE_MPI
    if (c->has_mpi) {
        MPI_TRY(MPI_Barrier(mpi_of(c)));
        return DSA_OK;
    }
#endif
    float one = 1; // NCCL has no barrier: an all-reduce of one float serves
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (c->has_nccl) {
        void *d = NULL;
        DSA_TRY(dsa_device_malloc(DSA_CUDA, sizeof one, &d));
        dsa_status s = dsa_memcpy(DSA_CUDA, d, DSA_CPU, &one, sizeof one);
        if (s == DSA_OK) s = dsa_all_reduce_sum_raw(c, d, 1, DSA_F32, DSA_CUDA);
        dsa_device_free(DSA_CUDA, d);
        return s;
    }
#endif
    (void)one;
    return dsa_error_set(DSA_ERR_COMM, "barrier: no backend");
}

// Host scalars go through whichever backend exists (NCCL via a device bounce).
static dsa_status host_all_reduce(const dsa_comm *c, void *vals, int n, dsa_dtype dt, bool max) {
    if (c->size == 1 || n == 0) return DSA_OK;
#ifdef DSA_HAVE_MPI
    if (c->has_mpi) {
        MPI_Datatype t = dt == DSA_F64 ? MPI_DOUBLE : MPI_INT64_T;
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, vals, n, t, max ? MPI_MAX : MPI_SUM, mpi_of(c)));
        return DSA_OK;
    }
#endif
#if defined(DSA_HAVE_CUDA) && defined(DSA_HAVE_NCCL)
    if (c->has_nccl) {
        size_t bytes = (size_t)n * 8;
        void *d = NULL;
        DSA_TRY(dsa_device_malloc(DSA_CUDA, bytes, &d));
        dsa_status s = dsa_memcpy(DSA_CUDA, d, DSA_CPU, vals, bytes);
        if (s == DSA_OK) {
            NCCL_COLL(c, "host all_reduce",
                      ncclAllReduce(d, d, (size_t)n, dt == DSA_F64 ? ncclFloat64 : ncclInt64, max ? ncclMax : ncclSum,
                                    (ncclComm_t)c->nccl, (cudaStream_t)dsa_cuda()->stream));
            s = nccl_wait(c, "host all_reduce");
        }
        if (s == DSA_OK) s = dsa_memcpy(DSA_CPU, vals, DSA_CUDA, d, bytes);
        dsa_device_free(DSA_CUDA, d);
        return s;
    }
#endif
    return dsa_error_set(DSA_ERR_COMM, "host all_reduce: no backend");
}

dsa_status dsa_all_reduce_sum_f64(const dsa_comm *c, double *vals, int n) {
    return host_all_reduce(c, vals, n, DSA_F64, false);
}
dsa_status dsa_all_reduce_max_i64(const dsa_comm *c, int64_t *vals, int n) {
    return host_all_reduce(c, vals, n, DSA_I64, true);
}

dsa_status dsa_all_reduce_sum(const dsa_comm *c, dsa_tensor *t) {
    return dsa_all_reduce_sum_raw(c, t->data, dsa_numel(t), t->dtype, t->device);
}

dsa_status dsa_all_gather(const dsa_comm *c, const dsa_tensor *in, dsa_tensor *out) {
    if (dsa_numel(out) != dsa_numel(in) * c->size || in->dtype != out->dtype) {
        char a[96], b[96];
        return dsa_error_set(DSA_ERR_SHAPE, "all_gather: out %s must hold %d x in %s", dsa_shape_str(out, b, 96),
                             c->size, dsa_shape_str(in, a, 96));
    }
    return dsa_all_gather_raw(c, in->data, out->data, dsa_numel(in), in->dtype, in->device);
}

dsa_status dsa_reduce_scatter_sum(const dsa_comm *c, const dsa_tensor *in, dsa_tensor *out) {
    if (dsa_numel(in) != dsa_numel(out) * c->size || in->dtype != out->dtype) {
        char a[96], b[96];
        return dsa_error_set(DSA_ERR_SHAPE, "reduce_scatter: in %s must hold %d x out %s", dsa_shape_str(in, a, 96),
                             c->size, dsa_shape_str(out, b, 96));
    }
    return dsa_reduce_scatter_sum_raw(c, in->data, out->data, dsa_numel(out), in->dtype, in->device);
}

// ---- the process grid ---------------------------------------------------------------------------------
dsa_status dsa_parallel_init(dsa_device dev, int tp, int cp, dsa_parallel *p) {
    memset(p, 0, sizeof *p);
    if (tp < 1 || cp < 1) return dsa_error_set(DSA_ERR_CONFIG, "parallel: tp (%d) and cp (%d) must be >= 1", tp, cp);
    // Checked from the launcher's environment before any communication: every rank evaluates the
    // same condition and stops with the same message, so nobody waits on a peer that left.
    int n = dsa_launch_detect().world_size;
    if (n % (tp * cp) != 0)
        return dsa_error_set(DSA_ERR_CONFIG, "world size %d is not divisible by tp * cp = %d * %d", n, tp, cp);
    DSA_TRY(dsa_comm_init_world(dev, &p->world));
    p->tp_size = tp;
    p->cp_size = cp;
    p->dp_size = n / (tp * cp);
    int r = p->world.rank;
    p->tp_rank = r % tp;
    p->cp_rank = (r / tp) % cp;
    p->dp_rank = r / (tp * cp);
    DSA_TRY(dsa_comm_split(&p->world, r / tp, p->tp_rank, &p->tp));                          // same (dp, cp)
    DSA_TRY(dsa_comm_split(&p->world, p->dp_rank * tp + p->tp_rank, p->cp_rank, &p->cp));    // same (dp, tp)
    DSA_TRY(dsa_comm_split(&p->world, p->cp_rank * tp + p->tp_rank, p->dp_rank, &p->dp));    // same (cp, tp)
    return DSA_OK;
}

void dsa_parallel_single(dsa_parallel *p) {
    memset(p, 0, sizeof *p);
    p->tp_size = p->cp_size = p->dp_size = 1;
    p->world.size = p->tp.size = p->cp.size = p->dp.size = 1;
}

void dsa_parallel_free(dsa_parallel *p) {
    dsa_comm_free(&p->tp);
    dsa_comm_free(&p->cp);
    dsa_comm_free(&p->dp);
    dsa_comm_free(&p->world);
}
