# A release whose app never becomes ready: its health check fails, it must be rolled back.
{
  demo = {
    marker = "unhealthy";
    readyAfter = null;
  };
}
