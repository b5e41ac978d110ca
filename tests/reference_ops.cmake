# The C DSA ops (through `dsa op`) against the PyTorch reference (tests/reference/dsa_ref.py).
# Exit 77 (skipped) when python3 lacks torch or h5py.
add_test(NAME reference_dsa_ops
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/check_dsa_op.py --dsa $<TARGET_FILE:dsa>)
set_tests_properties(reference_dsa_ops PROPERTIES LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 600)
