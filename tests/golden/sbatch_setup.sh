#!/bin/bash

# Parameters
#SBATCH --array=0-2%3
#SBATCH --cpus-per-task=4
#SBATCH --error=<TMP>/runs/demo/.submitit/%A_%a/%A_%a_0_log.err
#SBATCH --exclusive
#SBATCH --gpus-per-node=1
#SBATCH --job-name=bench-demo
#SBATCH --mail-type=END,FAIL
#SBATCH --nice=10
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=<TMP>/runs/demo/.submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --requeue
#SBATCH --signal=USR2@90
#SBATCH --time=120
#SBATCH --wckey=submitit

# setup
module load cuda/12.4
source ~/miniconda3/etc/profile.d/conda.sh
conda activate prunebench

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <TMP>/runs/demo/.submitit/%A_%a/%A_%a_%t_log.out --error <TMP>/runs/demo/.submitit/%A_%a/%A_%a_%t_log.err --cpus-per-task=4 <PYTHON> -u -m submitit.core._submit <TMP>/runs/demo/.submitit/%j
