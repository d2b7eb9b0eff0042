enum _PlaceholderChatConfig {}
