# h5py opens a dsa checkpoint (DESIGN.md: `h5py.File(path)['params']`), and `dsa inspect` lists it.
# Skipped (77) when h5py or numpy is missing.
if(EXISTS /usr/bin/python3)
  set(DSA_CKPT_PYTHON /usr/bin/python3)
else()
  find_program(DSA_CKPT_PYTHON python3)
endif()
if(DSA_CKPT_PYTHON)
  add_test(NAME checkpoint_h5py
           COMMAND ${DSA_CKPT_PYTHON} ${CMAKE_SOURCE_DIR}/tests/checkpoint_h5py.py
                   $<TARGET_FILE:test_checkpoint> $<TARGET_FILE:dsa>)
  set_tests_properties(checkpoint_h5py PROPERTIES LABELS cpu SKIP_RETURN_CODE 77)
endif()
