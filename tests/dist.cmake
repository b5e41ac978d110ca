# Distributed tests: each tests/dist/test_* binary under mpirun (MPI on CPU; NCCL on GPUs when
# DSA_TEST_DEVICE=cuda is set on a multi-GPU machine). Root needs --allow-run-as-root; CI has 2 cores.
if(DSA_HAVE_MPI)
  find_program(DSA_MPIRUN NAMES mpirun mpiexec)
  if(DSA_MPIRUN)
    set(DSA_MPI_FLAGS --oversubscribe --allow-run-as-root --bind-to none)
    file(GLOB dist_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/dist/test_*.c)
    foreach(src ${dist_tests})
      get_filename_component(name ${src} NAME_WE)
      foreach(np 2 4)
        add_test(NAME dist_${name}_np${np} COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np ${np} $<TARGET_FILE:${name}>)
        set_tests_properties(dist_${name}_np${np} PROPERTIES LABELS dist SKIP_RETURN_CODE 77 TIMEOUT 300)
      endforeach()
    endforeach()
    # A rank that dies mid-run stops every rank: the job must fail (not hang) within the timeout.
    add_test(NAME dist_rank_dies COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 2 -x DSA_TEST_DIE_RANK=1
             -x DSA_COMM_TIMEOUT_S=20 $<TARGET_FILE:test_comm>)
    set_tests_properties(dist_rank_dies PROPERTIES LABELS dist WILL_FAIL TRUE TIMEOUT 90)
  endif()
endif()
