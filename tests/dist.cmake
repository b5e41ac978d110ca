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
        set_tests_properties(dist_${name}_np${np} PROPERTIES LABELS dist SKIP_RETURN_CODE 77 TIMEOUT 600
                             ENVIRONMENT "DSA_SOURCE_DIR=${CMAKE_SOURCE_DIR};OMP_WAIT_POLICY=PASSIVE;OMP_NUM_THREADS=1")
      endforeach()
    endforeach()
    # A rank that dies mid-run stops every rank: the job must fail (not hang) within the timeout.
    add_test(NAME dist_rank_dies COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 2 -x DSA_TEST_DIE_RANK=1
             -x DSA_COMM_TIMEOUT_S=20 $<TARGET_FILE:test_comm>)
    set_tests_properties(dist_rank_dies PROPERTIES LABELS dist WILL_FAIL TRUE TIMEOUT 90)
    # `dsa train` under mpirun: a short TP x CP run end to end, and misconfigured launches that every
    # rank refuses with the same message before any collective (so none waits for the others).
    set(cfg ${CMAKE_SOURCE_DIR}/configs/tiny.cfg)
    set(run_dir ${CMAKE_BINARY_DIR}/dist_train_runs)
    add_test(NAME dist_train_tiny_tp2_cp2 COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 4 $<TARGET_FILE:dsa> train ${cfg}
             parallel.tp=2 parallel.cp=2 parallel.cp_split=zigzag train.steps=60 train.eval_every=60
             train.out_dir=${run_dir}/tp2cp2)
    set_tests_properties(dist_train_tiny_tp2_cp2 PROPERTIES LABELS dist TIMEOUT 300
                         PASS_REGULAR_EXPRESSION "done: 60 steps.*answer accuracy")
    add_test(NAME dist_train_tiny_dp2_zero1 COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 2 $<TARGET_FILE:dsa> train ${cfg}
             parallel.zero1=true train.steps=60 train.eval_every=60 train.out_dir=${run_dir}/dp2zero1)
    set_tests_properties(dist_train_tiny_dp2_zero1 PROPERTIES LABELS dist TIMEOUT 300
                         PASS_REGULAR_EXPRESSION "done: 60 steps.*answer accuracy")
    add_test(NAME dist_train_tp_not_dividing_heads COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 2 $<TARGET_FILE:dsa> train
             ${cfg} parallel.tp=2 model.n_heads=3 train.out_dir=${run_dir}/bad_heads)
    set_tests_properties(dist_train_tp_not_dividing_heads PROPERTIES LABELS dist TIMEOUT 60
                         PASS_REGULAR_EXPRESSION "n_heads = 3.*must be divisible by parallel.tp = 2")
    add_test(NAME dist_train_world_not_divisible COMMAND ${DSA_MPIRUN} ${DSA_MPI_FLAGS} -np 3 $<TARGET_FILE:dsa> train
             ${cfg} parallel.tp=2 train.out_dir=${run_dir}/bad_world)
    set_tests_properties(dist_train_world_not_divisible PROPERTIES LABELS dist TIMEOUT 60
                         PASS_REGULAR_EXPRESSION "world size 3 is not divisible by tp \\* cp = 2 \\* 1")
  endif()
endif()
