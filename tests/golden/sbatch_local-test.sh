#!/bin/bash

# Parameters
#SBATCH --array=0-5%2
#SBATCH --cpus-per-task=1
#SBATCH --error=<TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_0_log.err
#SBATCH --job-name=bench-digits-demo
#SBATCH --mem=1GB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=debug
#SBATCH --requeue
#SBATCH --signal=USR2@90
#SBATCH --time=10
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_%t_log.out --error <TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_%t_log.err --cpus-per-task=1 <PYTHON> -u -m submitit.core._submit <TMP>/runs/digits-demo/.submitit/%j
