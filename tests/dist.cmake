# Distributed tests: the tests/dist/test_* binaries under mpirun (MPI on CPU; NCCL on GPUs when
# DSA_TEST_DEVICE=cuda is set on a multi-GPU machine). Root needs --allow-run-as-root; CI has 2 cores.
if(DSA_HAVE_MPI)
  find_program(DSA_MPIRUN NAMES mpirun mpiexec)
  if(DSA_MPIRUN)
    set(DSA_MPI_FLAGS --oversubscribe --allow-run-as-root --bind-to none)
    foreach(np 2 4)
      add_test(NAME dist_comm_np${np} COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np ${np} $<TARGET_FILE:test_comm>)
      set_tests_properties(dist_comm_np${np} PROPERTIES LABELS dist SKIP_RETURN_CODE 77 TIMEOUT 300
                           ENVIRONMENT "OMPI_MCA_rmaps_base_oversubscribe=1;PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe")
    endforeach()
  endif()
endif()
