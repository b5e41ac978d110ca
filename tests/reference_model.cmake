# The PyTorch reference model against ours: loss and every parameter gradient (CPU).
add_test(NAME reference_model COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/reference/check_model.py $<TARGET_FILE:dsa>)
set_tests_properties(reference_model PROPERTIES LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 600)
