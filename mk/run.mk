# make run: the main job.  With a GPU (nvidia-smi lists >= 1 and
# libcuda.so.1 loads) it runs the cross-process benchmark through the best
# available backend: across GPU 0 and 1 with two GPUs or more, both
# processes on GPU 0 with one (the same-GPU table and the co-run phase);
# otherwise the rendezvous demo and latency bench in the qemu VM, saying
# why the GPU phases were skipped.
.PHONY: run
run: deps
	@./scripts/run-main
