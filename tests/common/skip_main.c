// Stands in for a CUDA test in a build without CUDA: prints why and exits with ctest's skip code.
#include <stdio.h>

int main(int argc, char **argv) {
    printf("SKIP: %s needs CUDA, and this build has none (nvcc was not found at configure time)\n",
           argc > 0 ? argv[0] : "test");
    return 77;
}
