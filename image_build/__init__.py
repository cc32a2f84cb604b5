"""The operator's side of go2aliyun: launch the intermediate instance, build the custom
image after the receiver has verified the copy, clean up (``go2aliyun-cloud``)."""
