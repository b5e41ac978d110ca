# test_cuda_dsa again with the older kernels switched on, so that every kernel a user can pick with an
# environment switch (README "Environment") keeps passing the same checks as the default one.
#   cuda_dsa_previous: the kernels the current defaults replaced (forward v4, head sum v3, indexer logits
#                      and gathered logits on mma.sync, the mma.sync backward v2, the gathered
#                      indexer backward's 16-key blocks at H 64, D 128).
#   cuda_dsa_older:    the mma.sync forward / head sum v2, backward v1, top-k v1, and the dense-window
#                      ops on their SIMT kernels; also the gathered backward's dk alone by column
#                      slices (DSA_GATHER_BWD_DKCOLS=1) and the gathered logits reading idx tile by tile
#                      (DSA_GATHER_KEYS_GLOBAL=1).
#   cuda_dsa_optin:    the opt-in kernels (the wgmma backward of the gathered logits, forward v5's
#                      gather that waits for its copies), the head sum v4 at D 576 (DSA_HEADSUM_SS=1) and
#                      the sparse backward v3's dkv by 32-byte sectors (DSA_SPARSE_BWD_SECTORS=1, its
#                      default until session 26).
#   cuda_dsa_optin_merged: the merged head sum and the bulk-reduction backwards (DSA_HEADSUM_ROWS=4,
#                      DSA_SPARSE_BWD_BULK=1, DSA_GATHER_BWD_BULK=1); where rows do not merge (H > 32), the
#                      head sum v6 at H <= 64 with two kv stages (DSA_HEADSUM_STAGES2=1).
#   cuda_dsa_gather_dk: the gathered indexer backward's older dk outputs (the defaults until session 26):
#                      at H 64, D 128 the slices' dk staged through shared memory (DSA_GATHER_BWD_STAGED=1),
#                      elsewhere the 16-key blocks' dk in 16-column chunks through shared memory
#                      (DSA_GATHER_BWD_CHUNKS=1); and the head sum v5 (the default until session 28:
#                      S(i + 1) issued after tile i's sums, DSA_HEADSUM_V5=1) with its warp sums by 24
#                      butterfly shuffles (DSA_HEADSUM_ALLREDUCE=1).
#   cuda_dsa_rows8:    the merged few-head forward and backward with as many rows a group as their 64-row
#                      tile holds, up to 8 (DSA_SPARSE_FWD_ROWS=8, DSA_SPARSE_BWD_ROWS=8; 5 at 12 heads,
#                      8 at 8; the default is 4).
# Without CUDA each is the printed skip of test_cuda_dsa.
foreach(variant
        "cuda_dsa_previous|DSA_SPARSE_FWD_V4=1;DSA_HEADSUM_V3=1;DSA_INDEXER_MMA=1;DSA_GATHER_MMA=1;DSA_SPARSE_BWD_V2=1;DSA_GATHER_BWD_BLOCKS=1"
        "cuda_dsa_older|DSA_SPARSE_FWD_V2=1;DSA_HEADSUM_V2=1;DSA_SPARSE_BWD_V1=1;DSA_TOPK_V1=1;DSA_DENSE_SIMT=1;DSA_GATHER_BWD_DKCOLS=1;DSA_GATHER_KEYS_GLOBAL=1"
        "cuda_dsa_optin|DSA_GATHER_BWD_WGMMA=1;DSA_SPARSE_FWD_V5_SYNC=1;DSA_HEADSUM_SS=1;DSA_SPARSE_BWD_SECTORS=1"
        "cuda_dsa_optin_merged|DSA_HEADSUM_ROWS=4;DSA_SPARSE_BWD_BULK=1;DSA_GATHER_BWD_BULK=1;DSA_HEADSUM_STAGES2=1"
        "cuda_dsa_gather_dk|DSA_GATHER_BWD_STAGED=1;DSA_GATHER_BWD_CHUNKS=1;DSA_HEADSUM_V5=1;DSA_HEADSUM_ALLREDUCE=1"
        "cuda_dsa_rows8|DSA_SPARSE_FWD_ROWS=8;DSA_SPARSE_BWD_ROWS=8")
  string(REPLACE "|" ";" parts "${variant}")
  list(GET parts 0 name)
  list(REMOVE_AT parts 0)
  add_test(NAME ${name} COMMAND test_cuda_dsa)
  set_tests_properties(${name} PROPERTIES LABELS cuda SKIP_RETURN_CODE 77
                       ENVIRONMENT "${parts};OMP_WAIT_POLICY=PASSIVE")
endforeach()
