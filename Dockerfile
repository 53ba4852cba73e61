# t2ictl on the official TensorFlow GPU image: `docker run --gpus all -v $PWD:/work IMAGE train --recipe cub`
# The image installs the project as its wheel installs it: the recipes ship inside the package (t2ictl.builtin_recipes),
# so nothing but the wheel's own files is needed at run time.
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

WORKDIR /opt/t2ictl
COPY pyproject.toml README.md ./
COPY t2ictl ./t2ictl
COPY recipes ./recipes
RUN pip install --no-cache-dir . && cd / && t2ictl --version && t2ictl recipes > /dev/null && rm -rf /opt/t2ictl

WORKDIR /work
ENTRYPOINT ["t2ictl"]
CMD ["--help"]
