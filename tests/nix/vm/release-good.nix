# A release whose app is ready at once (committed as release.nix by vm-deploy.nix).
{
  demo = {
    marker = "good";
    readyAfter = 0;
  };
}
