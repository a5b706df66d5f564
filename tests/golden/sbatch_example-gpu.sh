#!/bin/bash

# Parameters
#SBATCH --account=my-project
#SBATCH --array=0-5%6
#SBATCH --constraint='a100|h100'
#SBATCH --cpus-per-task=16
#SBATCH --error=<TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=bench-digits-demo
#SBATCH --mem=64GB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@90
#SBATCH --time=240
#SBATCH --wckey=submitit

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_%t_log.out --error <TMP>/runs/digits-demo/.submitit/%A_%a/%A_%a_%t_log.err --cpus-per-task=16 <PYTHON> -u -m submitit.core._submit <TMP>/runs/digits-demo/.submitit/%j
