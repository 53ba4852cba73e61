# t2ictl on the official TensorFlow GPU image: `docker run --gpus all -v $PWD:/work IMAGE train --recipe cub`
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

WORKDIR /opt/t2ictl
COPY pyproject.toml README.md ./
COPY t2ictl ./t2ictl
COPY recipes ./recipes
RUN pip install --no-cache-dir . && t2ictl --help > /dev/null

ENV T2ICTL_RECIPES=/opt/t2ictl/recipes \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /work
ENTRYPOINT ["t2ictl"]
CMD ["--help"]
