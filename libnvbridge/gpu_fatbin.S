/* SPDX-License-Identifier: MIT */
/*
 * The SM copy kernel (gather.cu) as built by nvcc: a fatbin with sm_90
 * SASS and compute_90 PTX, loaded with cuModuleLoadData.  Without nvcc at
 * build time NVB_GPU_FATBIN is undefined and the image is empty: the
 * library then uses the copy engines only.
 */
	.section .rodata.nvb_gpu_fatbin, "a"
	.balign 64
	.globl nvb_gpu_fatbin
	.hidden nvb_gpu_fatbin
	.type nvb_gpu_fatbin, @object
nvb_gpu_fatbin:
#ifdef NVB_GPU_FATBIN
	.incbin NVB_GPU_FATBIN
#endif
	.globl nvb_gpu_fatbin_end
	.hidden nvb_gpu_fatbin_end
nvb_gpu_fatbin_end:
	.byte 0
	.section .note.GNU-stack, "", @progbits
