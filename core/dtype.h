// Element types and devices. Every tensor carries one of each.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_F32 = 0, DSA_F64, DSA_BF16, DSA_I32, DSA_I64, DSA_U8, DSA_NUM_DTYPES } dsa_dtype;
typedef enum { DSA_CPU = 0, DSA_CUDA } dsa_device;

size_t dsa_dtype_size(dsa_dtype t);
const char *dsa_dtype_name(dsa_dtype t);
const char *dsa_device_name(dsa_device d);
int dsa_dtype_is_float(dsa_dtype t);

// bf16 <-> f32, round-to-nearest-even (NaN stays NaN).
uint16_t dsa_f32_to_bf16(float f);
float dsa_bf16_to_f32(uint16_t b);

#ifdef __cplusplus
}
#endif
