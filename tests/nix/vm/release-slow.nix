# A release whose app takes a while to be ready: time to kill the agent mid-deployment.
{
  demo = {
    marker = "slow";
    readyAfter = 15;
  };
}
