# make run: the main job.  With two GPUs (nvidia-smi lists >= 2 and
# libcuda.so.1 loads) it runs the cross-process NVLink benchmark through the
# best available backend; otherwise the rendezvous demo and latency bench in
# the qemu VM, saying why the GPU phases were skipped.
.PHONY: run
run: deps
	@./scripts/run-main
